"""What every reader returns: whole splits as tensors plus the metadata that sizes models and tasks.

Readers never normalize, augment or batch: the batch loader does that, per batch.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from trainkit.errors import UserError


class DataError(UserError):
    """Bad or missing input data. The message is one paragraph for a person: file, line, what, fix."""


@dataclass
class Split:
    """One split held whole in memory: images stay uint8 until a batch is cut."""

    x: Tensor  # uint8 N×C×H×W for images, float32 N×D for tabular data
    y: Tensor | None  # int64 class indices, float32 N×K targets, or None when unlabeled

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class DataMeta:
    """What the rest of trainkit may know about a dataset."""

    name: str
    kind: str  # "classification" or "regression"
    in_shape: tuple[int, ...]  # one sample, e.g. (1, 28, 28) or (1,)
    num_outputs: int  # classes, or regression targets
    class_names: list[str] | None = None
    scale: float = 1.0  # x is divided by this before normalization (255.0 for uint8 pixels)
    mean: tuple[float, ...] | None = None  # per-channel, after scaling; None: no normalization
    std: tuple[float, ...] | None = None
    target_shape: tuple[int, ...] = field(default_factory=tuple)  # one target: () for classes, (K,) for regression
    # Samples that are whole curves y(x) of a known family (data=curves: trainkit.data.curves.Curves.spec()): a GAN
    # learns x alone, draws the samples as curves, and judges them against the family. None: other data.
    curve: dict[str, Any] | None = None


SPLITS = ("train", "val", "test")  # every split a reader can return, and what `load(splits=...)` asks for by default


@dataclass
class DataSplits:
    """The splits a reader was asked for, and metadata that never depends on which ones were asked for.

    A split not asked for is None; `test` is also None when the data set has none (no data.test_csv).
    """

    train: Split | None
    val: Split | None
    test: Split | None
    meta: DataMeta

    @classmethod
    def asked(cls, asked: frozenset[str], train: Split | None, val: Split | None, test: Split | None,
              meta: DataMeta) -> DataSplits:
        """The splits named in `asked` (from `asked_splits`); the others None, even when they were read."""
        pick = lambda name, split: split if name in asked else None  # noqa: E731
        return cls(pick("train", train), pick("val", val), pick("test", test), meta)


def asked_splits(splits: Collection[str], who: str) -> frozenset[str]:
    """The split names a reader's `load(splits=...)` was given, checked: a typo must not silently load nothing."""
    unknown = [s for s in splits if s not in SPLITS] if not isinstance(splits, str) else [splits]
    if unknown or not splits:
        raise DataError(
            f"{who}: splits={splits!r} is not a collection of split names. Ask for some of "
            f"{', '.join(SPLITS)}, e.g. splits=(\"test\",)."
        )
    return frozenset(splits)


def carve(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split off `fraction` of `split` (seeded, so a resumed run sees the same split): (rest, carved)."""
    n = len(split)
    n_carved = int(round(n * fraction))
    if not 0 < n_carved < n:
        raise DataError(
            f"cannot hold back a fraction of {fraction} from {n} samples: it leaves "
            f"{n - n_carved} to keep and {n_carved} to hold back. Set a fraction strictly between "
            f"0 and 1 that leaves at least one sample on each side."
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    keep, held = order[n_carved:].sort().values, order[:n_carved].sort().values
    take = lambda idx: Split(split.x[idx], None if split.y is None else split.y[idx])  # noqa: E731
    return take(keep), take(held)


def check_fractions(who: str, val_fraction: float, test_fraction: float, test_off: str = "off") -> None:
    """data.val_fraction in (0, 1) and data.test_fraction in [0, 1) (0: `test_off`), or an error naming the key."""
    if not 0 < val_fraction < 1:
        raise DataError(f"{who}: data.val_fraction={val_fraction!r} is not a fraction strictly between 0 and 1. "
                        f"Set e.g. data.val_fraction=0.1.")
    if not 0 <= test_fraction < 1:
        raise DataError(f"{who}: data.test_fraction={test_fraction!r} is not 0 ({test_off}) or a fraction below 1. "
                        f"Set e.g. data.test_fraction=0.2.")
