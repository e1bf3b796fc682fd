"""A LeNet-style CNN: [5×5 conv → ReLU → 2×2 max-pool] blocks, then fully connected layers.

Sized from the input: 28×28 inputs get padding 2 on the first conv (LeNet-5's 32×32 view of MNIST),
so the same network serves 1×28×28 and 3×32×32 (the CIFAR-10 tutorial network with the defaults).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from trainkit.models.mlp import mlp_layers


class CNN(nn.Module):
    def __init__(self, in_shape: Sequence[int], num_outputs: int, channels: Sequence[int] = (6, 16),
                 hidden: Sequence[int] = (120, 84), dropout: float = 0.0) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"model=cnn needs image data (C×H×W); this data has samples of shape {tuple(in_shape)}.")
        c, h, w = in_shape
        blocks: list[nn.Module] = []
        for i, out_c in enumerate(channels):
            pad = 2 if i == 0 and min(h, w) < 32 else 0
            blocks += [nn.Conv2d(c, out_c, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2)]
            h, w = (h + 2 * pad - 4) // 2, (w + 2 * pad - 4) // 2
            if min(h, w) < 1:
                raise ValueError(f"model.channels={list(channels)} has too many conv blocks for {tuple(in_shape)} images.")
            c = out_c
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Flatten(), *mlp_layers(c * h * w, hidden, num_outputs, dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
