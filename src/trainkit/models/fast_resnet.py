"""A small ResNet-like CNN with batch norm, sized for fast training (experiment=cifar10_fast, mnist_fast).

The shape follows the fast CIFAR-10 recipes (DAWNBench's ResNet-9, airbench): a 3×3 stem conv, then stages that
each widen with a 3×3 conv and halve the resolution with a 2×2 max-pool, followed by `depth - 1` residual 3×3
convs, then a global max-pool and one linear layer. `width` (the stem's channels) and `stages` (each stage's width as a
multiple of it) set the cost: at width 64 and stages [1, 4, 4] it is airbench's size for a GPU; the presets'
defaults are sized for 2 CPU cores. Inputs of any size from 8×8 up (1×28×28 and 3×32×32 alike).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def conv_bn(c_in: int, c_out: int, pool: bool = False) -> list[nn.Module]:
    """3×3 conv (no bias: batch norm's shift replaces it), an optional 2×2 max-pool, batch norm, ReLU. Pooling
    before the norm and activation runs them on a quarter of the pixels."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers + [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class Residual(nn.Module):
    """x + f(x): the block learns a correction to its input, which keeps early training stable."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class FastResNet(nn.Module):
    def __init__(self, in_shape: Sequence[int], num_outputs: int, width: int = 24, stages: Sequence[int] = (1, 2, 4),
                 depth: int = 2) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"model=fast_resnet needs image data (C×H×W); this data has samples of shape "
                             f"{tuple(in_shape)}.")
        if depth < 1:
            raise ValueError(f"model.depth={depth} must be at least 1 conv per stage (2: one residual conv).")
        c, h, w = in_shape
        if min(h, w) < 2 ** len(stages):
            raise ValueError(f"model.stages={list(stages)} halves {h}×{w} images {len(stages)} times: use fewer "
                             f"stages or larger images.")
        layers: list[nn.Module] = conv_bn(c, width)
        channels = width
        for multiple in stages:
            out = width * multiple
            layers += conv_bn(channels, out, pool=True)
            layers += [Residual(nn.Sequential(*conv_bn(out, out))) for _ in range(depth - 1)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(channels, num_outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
