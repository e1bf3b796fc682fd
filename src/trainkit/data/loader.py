"""The batch loader: a whole split as one tensor, batches cut by indexing a seeded permutation.

The split is usually a memory-mapped sample store (data/cache.py): a batch is gathered from the page cache, so the
process's memory does not grow with the data. Images stay uint8 until a batch is cut; scaling, normalization and
augmentation run per batch as tensor ops on the training device. No worker processes, no per-sample Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from trainkit.data.base import DataMeta, Split

PIN_WHOLE_BYTES = 512 << 20  # a host split larger than this is pinned batch by batch, not copied whole into pinned RAM
DEVICE_SHARE = 0.25  # a split goes onto the accelerator when it takes at most this share of its free memory


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether a split of `nbytes` may live on `device` (data.on_device=true): a small share of its free memory, so
    the model, its activations and the other splits still fit. A store larger than that streams from the host."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_SHARE * free


@dataclass
class Augment:
    """Random crop after zero-padding, and horizontal flip, applied to whole image batches (of any dtype: the
    loader applies it to the stored uint8 pixels, a quarter of the bytes of float32; zero padding is black)."""

    crop_padding: int = 0  # pixels; 0 disables the crop
    hflip: bool = False

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        n, _, h, w = x.shape
        if self.crop_padding > 0:
            p = self.crop_padding
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
            # Every h×w window of each padded image, as a view (n×c×(2p+1)×(2p+1)×h×w); indexing picks one window
            # per image and copies it whole rows at a time: 2.7× faster than gathering pixel by pixel, the same
            # pixels (benchmarks/README.md).
            windows = padded.unfold(2, h, 1).unfold(3, w, 1)
            x = windows[torch.arange(n, device=x.device), :, dy, dx]
        if self.hflip:
            flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)[:, None, None, None]
            x = torch.where(flip, x.flip(3), x)
        return x


class BatchLoader:
    """Iterates (x, y) batches of one split on `device`. Epoch e's order is a permutation seeded by
    (seed, e), so any epoch can be replayed, and `start_batch` resumes in the middle of one.

    Across `shard=(rank, world)` processes: a shuffled (training) loader hands rank r the r-th
    `batch_size` slice of each global batch of batch_size × world samples, so together the ranks see
    exactly the batches one process would see at that size (a last global batch too small to give
    every rank a sample is dropped); an unshuffled (evaluation) loader hands each rank one contiguous
    chunk of the split, so every sample is counted exactly once."""

    memory_format = torch.contiguous_format  # of 4-D image batches; trainer.channels_last sets torch.channels_last

    def __init__(
        self,
        split: Split,
        meta: DataMeta,
        batch_size: int,
        device: torch.device,
        *,
        shuffle: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
        on_device: bool = True,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if split.y is None:
            raise ValueError("BatchLoader needs a labeled split")
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} must be at least 1.")
        self.batch_size, self.device, self.shuffle, self.seed = batch_size, device, shuffle, seed
        self.augment = augment
        self.epoch, self.start_batch = 0, 0
        self.rank, self.world = shard
        n = len(split.x)
        # Evaluation: this rank's contiguous chunk. Training: all samples, cut per global batch.
        self.chunk = torch.tensor_split(torch.arange(n), self.world)[self.rank] if not shuffle else None
        # On an accelerator a split that fits lives there by default: a batch is cut without a host copy. Kept on
        # the host instead, a small split is pinned whole so each batch copy can overlap compute; a big one (a
        # memory-mapped store) stays where it is, and each batch is pinned as it is cut.
        nbytes = split.x.numel() * split.x.element_size()
        self.resident = device.type == "cpu" or (on_device and fits_on(device, nbytes))
        pin = not self.resident and device.type == "cuda" and nbytes <= PIN_WHOLE_BYTES
        self.x = split.x.to(device) if self.resident else (split.x.pin_memory() if pin else split.x)
        self.y = split.y.to(device) if self.resident else (split.y.pin_memory() if pin else split.y)
        self.scale = meta.scale
        shape = (1, -1) + (1,) * (len(meta.in_shape) - 1)
        self.mean = None if meta.mean is None else torch.tensor(meta.mean, device=device).view(shape)
        self.std = None if meta.std is None else torch.tensor(meta.std, device=device).view(shape)

    def __len__(self) -> int:
        if self.chunk is not None:
            return -(-len(self.chunk) // self.batch_size)
        step = self.batch_size * self.world
        full, rest = divmod(len(self.x), step)
        return full + (rest >= self.world)

    @property
    def num_samples(self) -> int:
        return len(self.x) if self.chunk is None else len(self.chunk)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _order(self, epoch: int) -> Tensor | None:
        if self.chunk is not None:
            return None if self.world == 1 else self.chunk.to(self.x.device)
        if not self.shuffle:
            return None
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.x), generator=g).to(self.x.device)

    def _seed(self, g: torch.Generator, epoch: int, b: int) -> torch.Generator:
        # Augmentation draws are seeded per batch, so a resumed epoch replays them exactly.
        return g.manual_seed((self.seed * 1_000_003 + epoch) * 100_003 + b)

    def _batch(self, order: Tensor | None, b: int) -> Tensor | slice:
        if self.chunk is not None or self.world == 1:
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            return sl if order is None else order[sl]
        step = self.batch_size * self.world
        glob = order[b * step:(b + 1) * step] if order is not None else torch.arange(b * step, min((b + 1) * step, len(self.x)))
        if len(glob) == step:
            return glob[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        return torch.tensor_split(glob, self.world)[self.rank]  # the last, short global batch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch
        order = self._order(epoch)
        g = torch.Generator()
        for b in range(self.start_batch, len(self)):
            idx = self._batch(order, b)
            self._seed(g, epoch, b)
            yield self._prepare(self._to_device(_cut(self.x, idx)), g), self._to_device(_cut(self.y, idx))
        self.start_batch = 0

    def preview(self, epoch: int = 1) -> tuple[Tensor, Tensor]:
        """The first batch that `__iter__` yields in epoch `epoch` (training counts from 1), augmented but as
        stored (uint8 pixels, neither scaled nor normalized), on the CPU: what a person should look at. The
        loader's own position (epoch, start_batch) is left alone, so it can be called before or mid-training."""
        idx = self._batch(self._order(epoch), 0)
        x = self._augmented(_cut(self.x, idx), self._seed(torch.Generator(), epoch, 0))
        return x.cpu(), _cut(self.y, idx).cpu()

    def _to_device(self, t: Tensor) -> Tensor:
        if self.resident:
            return t
        if self.device.type == "cuda":
            t = t.pin_memory()  # an indexed batch is a fresh tensor: pin it so the copy is asynchronous
        return t.to(self.device, non_blocking=True)

    @cached_property
    def _affine(self) -> tuple[Tensor | float, Tensor | float] | None:
        return affine(self.scale, self.mean, self.std)

    def _augmented(self, x: Tensor, g: torch.Generator) -> Tensor:
        # The same draws wherever x lives: the generator is on the CPU, the augmentation only indexes and flips.
        return x if self.augment is None else self.augment(x, g)

    def _prepare(self, x: Tensor, g: torch.Generator) -> Tensor:
        # float(), /, -, / would take four passes over a batch; this takes three, into one new tensor.
        x = self._augmented(x, g)
        fmt = self.memory_format if x.dim() == 4 else torch.preserve_format
        if self._affine is None:
            return x.to(torch.float32, memory_format=fmt)  # float data as stored: no copy when already float32
        a, b = self._affine
        x = x.to(torch.float32, memory_format=fmt, copy=True)  # a fresh tensor: never the split itself
        x.mul_(a)
        return x.add_(b) if isinstance(b, Tensor) else x


def _cut(t: Tensor, idx: Tensor | slice) -> Tensor:
    """Rows `idx` of `t`. A slice is a view; for an index tensor, index_select copies whole rows, which is much
    faster than t[idx] for uint8 image batches on the CPU (benchmarks/README.md)."""
    return t[idx] if isinstance(idx, slice) else torch.index_select(t, 0, idx)


def affine(scale: float, mean: Tensor | None, std: Tensor | None) -> tuple[Tensor | float, Tensor | float] | None:
    """Scaling and normalization folded into one multiply-add: (x / scale - mean) / std = x * a + b; None for
    identity. The one definition of the loader's arithmetic: exported models (reports/inference.py) reuse it,
    so they normalize bit for bit as training did."""
    if mean is None:
        return None if scale == 1.0 else (1.0 / scale, 0.0)
    return 1.0 / (scale * std), -mean / std
