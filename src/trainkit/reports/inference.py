"""The data's input normalization as a module, so raw values go in (pixels 0..255 as uint8 or float, or a
regression's x values), its inverse for generated samples; and batched inference over tensors or a loader.

Tasks build what they deploy from these: what a user feeds an exported file is what `trainkit predict` feeds
the network, and both normalize exactly as the batch loader does during training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from typing import Any, ContextManager

import torch
from torch import Tensor, nn

from trainkit.data.base import DataMeta
from trainkit.data.loader import affine


def _shaped(values: tuple[float, ...] | None, ndim: int) -> Tensor | None:
    """Per-channel values shaped to broadcast over a batch (1×C×1×1 for images, 1×D for tables); None stays None."""
    if values is None:
        return None
    return torch.tensor(values, dtype=torch.float32).view((1, -1) + (1,) * (ndim - 2))


class RawInput(nn.Module):
    """x → x.float() · a + b with the batch loader's own a, b (`affine`: (x / scale − mean) / std folded into
    one multiply-add), as a module that exports. Without a mean and a scale of 1 (regression data): x · 1 + 0."""

    def __init__(self, meta: DataMeta) -> None:
        super().__init__()
        ndim = len(meta.in_shape) + 1
        a, b = affine(float(meta.scale), _shaped(meta.mean, ndim), _shaped(meta.std, ndim)) or (1.0, 0.0)
        for name, value in (("a", a), ("b", b)):  # python floats become buffers shaped 1×1…, to broadcast alike
            shape = value.shape if isinstance(value, Tensor) else (1,) * ndim
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32).reshape(shape))

    def forward(self, x: Tensor) -> Tensor:
        return x.float() * self.a + self.b


class RawOutput(nn.Module):
    """The inverse for generated samples: normalized units → the data's raw units (pixels 0..255)."""

    def __init__(self, scale: float, mean: Tensor | None, std: Tensor | None) -> None:
        super().__init__()
        self.scale = float(scale)
        self.register_buffer("mean", torch.zeros(1) if mean is None else mean.float().unsqueeze(0))
        self.register_buffer("std", torch.ones(1) if std is None else std.float().unsqueeze(0))

    def forward(self, x: Tensor) -> Tensor:
        return (x.float() * self.std + self.mean) * self.scale


def batches(x: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size]


@torch.inference_mode()
def collect(fn: Callable[[Tensor], Tensor], loader: Iterable, autocast: Callable[[], ContextManager[Any]] = nullcontext,
            limit: int | None = None) -> tuple[Tensor, Tensor]:
    """`fn` over every (x, y) batch of a loader (or its first `limit` batches): (outputs, targets) on the CPU."""
    outputs, targets = [], []
    for i, (x, y) in enumerate(loader):
        if limit is not None and i >= limit:
            break
        with autocast():
            outputs.append(fn(x).float().cpu())
        targets.append(y.cpu())
    if not outputs:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(outputs), torch.cat(targets)
