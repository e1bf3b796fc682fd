"""A multi-layer perceptron: flatten, hidden Linear+ReLU layers, a linear output layer."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn


def mlp_layers(in_features: int, hidden: Sequence[int], out_features: int, dropout: float = 0.0,
               activation: type[nn.Module] = nn.ReLU) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), activation()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_features = width
    layers.append(nn.Linear(in_features, out_features))
    return layers


class MLP(nn.Module):
    def __init__(self, in_shape: Sequence[int], num_outputs: int, hidden: Sequence[int] = (500,),
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), *mlp_layers(math.prod(in_shape), hidden, num_outputs, dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
