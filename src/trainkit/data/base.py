"""What every reader returns: whole splits as tensors plus the metadata that sizes models and tasks.

Readers never normalize, augment or batch: the batch loader does that, per batch.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
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
    # What the reader wants a person to know, kept in the run's summary: e.g. the unreadable images it skipped.
    warnings: list[str] = field(default_factory=list)

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
    from trainkit.data.cache import take as gather  # a big store's split is carved to disk, not into memory

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    keep, held = order[n_carved:].sort().values, order[:n_carved].sort().values
    take = lambda idx: Split(gather(split.x, idx), None if split.y is None else split.y[idx])  # noqa: E731
    return take(keep), take(held)


def carve_for(who: str, split: Split, fraction: float, seed: int, key: str) -> tuple[Split, Split]:
    """`carve`, with a refusal that names the reader and the key that asked for it (e.g. data.val_fraction)."""
    try:
        return carve(split, fraction, seed)
    except DataError as err:
        raise DataError(f"{who}: {key}={fraction}: {err}") from None


def image_size(size: Any, who: str) -> tuple[int, int] | None:
    """data.size as (H, W), or None (keep the images' own size); a refusal naming the key otherwise."""
    if size is None:
        return None
    ok = isinstance(size, (list, tuple)) and len(size) == 2 and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)
    if not ok:
        raise DataError(f"{who}: data.size={size!r} is not two whole numbers [H, W] of at least 1. Set e.g. "
                        f"data.size=[64,64], or data.size=null to keep the images' own size.")
    return int(size[0]), int(size[1])


def check_fractions(who: str, val_fraction: float, test_fraction: float, test_off: str = "off") -> None:
    """data.val_fraction in (0, 1) and data.test_fraction in [0, 1) (0: `test_off`), or an error naming the key."""
    if not 0 < val_fraction < 1:
        raise DataError(f"{who}: data.val_fraction={val_fraction!r} is not a fraction strictly between 0 and 1. "
                        f"Set e.g. data.val_fraction=0.1.")
    if not 0 <= test_fraction < 1:
        raise DataError(f"{who}: data.test_fraction={test_fraction!r} is not 0 ({test_off}) or a fraction below 1. "
                        f"Set e.g. data.test_fraction=0.2.")


def regular_file(path: str | Path, what: str) -> Path:
    """`path`, known to be a regular file (following symbolic links) before anything opens it: a FIFO, a socket or a
    device would block or stream for ever, a dangling link would fail deep inside a decoder. `what` names it in the
    error, e.g. "predict: input=x.csv"."""
    path = Path(path)
    said = f"{what}: " if what else ""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise DataError(f"{said}{path} is a symbolic link to {os.readlink(path)}, which does not exist. Point the "
                            f"link at the file, or remove it.") from None
        raise DataError(f"{said}{path} does not exist.") from None
    except OSError as err:  # a loop of links, a name too long, no permission to look
        raise DataError(f"{said}{path} cannot be read ({err.strerror or err}).") from None
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "not a regular file")
        raise DataError(f"{said}{path} is {kind}, not a file: trainkit reads regular files only (a pipe or a "
                        f"device would block for ever). Give a file.")
    return path


def check_meta(meta: DataMeta) -> None:
    """A DataMeta that can size a model and normalize its samples, or a DataError naming the field."""
    def bad(field: str, value: Any, should: str) -> DataError:
        return DataError(f"its DataMeta has {field}={value!r}, which should be {should}.")

    whole = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1  # noqa: E731
    if not isinstance(meta.name, str) or not meta.name:
        raise bad("name", meta.name, "the data set's name, a word")
    if not isinstance(meta.kind, str) or not meta.kind:
        raise bad("kind", meta.kind, 'a word naming what is learned, e.g. "classification" or "regression"')
    if not isinstance(meta.in_shape, (tuple, list)) or not meta.in_shape or not all(whole(d) for d in meta.in_shape):
        raise bad("in_shape", meta.in_shape, "one sample's shape, whole numbers of at least 1, e.g. (2,) or (3, 32, 32)"
                  )
    meta.in_shape = tuple(meta.in_shape)
    if not whole(meta.num_outputs):
        raise bad("num_outputs", meta.num_outputs, "the number of classes or targets, a whole number of at least 1")
    if meta.class_names is not None:
        names = meta.class_names
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names) or (
                meta.kind == "classification" and len(names) != meta.num_outputs):
            raise bad("class_names", names, f"None or a list of {meta.num_outputs} names (one per class)")
        meta.class_names = list(names)
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    if not number(meta.scale) or meta.scale <= 0:
        raise bad("scale", meta.scale, "a positive number that x is divided by (255.0 for uint8 pixels, else 1.0)")
    if (meta.mean is None) != (meta.std is None):
        raise bad("mean" if meta.std is None else "std", None, "given with the other: mean and std normalize together")
    channels = meta.in_shape[0]
    for field_name in ("mean", "std"):
        values = getattr(meta, field_name)
        if values is None:
            continue
        if not isinstance(values, (list, tuple)) or len(values) not in (1, channels) or not all(map(number, values)) \
                or (field_name == "std" and not all(v > 0 for v in values)):
            raise bad(field_name, values, f"None or {channels} finite numbers (one per channel or feature, after "
                                          f"scaling){', each above 0' if field_name == 'std' else ''}")
        setattr(meta, field_name, tuple(float(v) for v in values))
    if not isinstance(meta.target_shape, (tuple, list)) or not all(whole(d) for d in meta.target_shape):
        raise bad("target_shape", meta.target_shape, "one target's shape: () for a class index, (K,) for K targets")
    meta.target_shape = tuple(meta.target_shape)


def check_split(split: Any, name: str, meta: DataMeta) -> Split:
    """A split as the loader needs it: x a numeric tensor of N samples of meta.in_shape, y None or one finite target
    per sample (for classification a class index in 0..num_outputs-1, as int64), never empty; or a DataError."""
    if not isinstance(split, Split):
        raise DataError(f"its {name} split is {type(split).__name__}, not a trainkit.data.base.Split(x, y).")
    x = _numbers(split.x, f"its {name} split's x", "a tensor or numpy array of numbers (uint8 pixels or floats)")
    if x.dtype == torch.bool:
        raise DataError(f"its {name} split's x is bool; give numbers (uint8 pixels or floats, e.g. x.float()).")
    if x.dim() == 0 or tuple(x.shape[1:]) != tuple(meta.in_shape):
        shape = "×".join(map(str, meta.in_shape))
        raise DataError(f"its {name} split holds samples of shape {list(x.shape[1:])}, but its DataMeta says "
                        f"in_shape={list(meta.in_shape)}. Make the two agree (x: N×{shape}).")
    if len(x) == 0:
        training = name == "train"
        raise DataError(f"its {name} split is empty (0 samples): there is nothing to {'train' if training else 'judge'}"
                        f" on. Return samples in it{'' if training else ', or None where there is no such split'}.")
    if x.is_floating_point():
        x = x.float()
        step = max(1, (16 << 20) // max(1, x[0].numel()))  # rows per check: a big store is not copied whole
        width = x[0].numel()
        bad = torch.cat([~torch.isfinite(x[s:s + step].reshape(-1, width)).all(1) for s in range(0, len(x), step)])
        if bool(bad.any()):
            raise DataError(f"its {name} split's sample {int(bad.nonzero()[0])} holds NaN or inf values "
                            f"({int(bad.sum())} of {len(x)} samples do): a model learns nothing from them. Drop or "
                            f"fill them.")
    y = None if split.y is None else _targets(split.y, name, meta)
    if y is not None and len(y) != len(x):
        raise DataError(f"its {name} split has {len(y)} targets for {len(x)} samples: give one per sample.")
    return Split(x, y)


def _numbers(values: Any, what: str, expected: str) -> Tensor:
    try:
        t = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        dtype = getattr(values, "dtype", None)
        kind = f"{type(values).__name__} of {dtype}" if dtype is not None else type(values).__name__
        said = "" if dtype is not None else f" ({' '.join(str(exc).split())[:100]})"
        raise DataError(f"{what} are {kind}, not numbers{said}. Give {expected}.") from None
    if t.is_complex():
        raise DataError(f"{what} are {str(t.dtype).removeprefix('torch.')} numbers; give {expected}.")
    return t


def _targets(values: Any, name: str, meta: DataMeta) -> Tensor:
    expected = (f"class indices 0..{meta.num_outputs - 1} (the names go in DataMeta.class_names)"
                if meta.kind == "classification" else "a tensor or numpy array of numbers")
    y = _numbers(values, f"its {name} split's targets", expected)
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        row = int((~torch.isfinite(y)).reshape(len(y), -1).any(1).nonzero()[0])
        raise DataError(f"its {name} split's target of sample {row} is {y[row].tolist()}: targets must be finite "
                        f"numbers.")
    if meta.kind != "classification":
        expected = (len(y), *meta.target_shape)
        if tuple(y.shape) != expected and y.numel() == math.prod(expected):
            y = y.reshape(expected)  # N targets for target_shape (1,): one column
        if tuple(y.shape) != expected:
            raise DataError(f"its {name} split's targets have shape {list(y.shape)}, but its DataMeta says "
                            f"target_shape={list(meta.target_shape)}: expected {list(expected)}.")
        return y.float()
    if y.dim() != 1:
        raise DataError(f"its {name} split's class labels have shape {list(y.shape)}; give one class index per sample, "
                        f"shape [N] (e.g. y.squeeze(1)).")
    if y.is_floating_point():
        fractional = (y != y.round()).nonzero()
        if len(fractional):
            row = int(fractional[0])
            raise DataError(f"its {name} split's label of sample {row} is {y[row].item()}, not a class index: class "
                            f"labels are whole numbers 0..{meta.num_outputs - 1} (a fraction would be truncated).")
    y = y.long()
    outside = ((y < 0) | (y >= meta.num_outputs)).nonzero()
    if len(outside):
        row = int(outside[0])
        raise DataError(f"its {name} split's label of sample {row} is {y[row].item()}, outside "
                        f"0..{meta.num_outputs - 1} (num_outputs={meta.num_outputs} classes; {len(outside)} labels "
                        f"are outside). Give class indices from 0, or the right num_outputs.")
    return y
