"""What `trainkit data check` measures on loaded splits: counts, classes, value ranges, and the problems that
do not stop a reader (missing classes, copies across splits, statistics that disagree with the config)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from trainkit.data.base import DataMeta, DataSplits, Split

CHUNK = 4096  # samples per step when computing statistics: bounds the float copy of a large split
IMBALANCE = 5.0  # most / least frequent class in train above this is worth a word
MEAN_TOLERANCE, STD_RATIO = 0.1, 1.5  # configured normalization this far from the data's own is worth a word


@dataclass
class SplitSummary:
    name: str
    samples: int
    labeled: bool
    shape: list[int]  # of one sample
    dtype: str
    min: float
    max: float
    mean: list[float]  # per channel (per feature for tabular data), after dividing by meta.scale
    std: list[float]
    class_counts: list[int] | None = None  # classification only
    constant: int = 0  # samples whose values are all equal (blank images)
    non_finite: int = 0  # samples holding NaN or inf


@dataclass
class Report:
    meta: DataMeta
    splits: list[SplitSummary]
    fatal: list[str] = field(default_factory=list)  # training would fail or learn garbage
    warnings: list[str] = field(default_factory=list)  # worth knowing, not blocking

    def as_dict(self) -> dict[str, Any]:
        return {"data": self.meta.name, "kind": self.meta.kind, "in_shape": list(self.meta.in_shape),
                "class_names": self.meta.class_names, "splits": [asdict(s) for s in self.splits],
                "fatal": self.fatal, "warnings": self.warnings}


def summarize(data: DataSplits) -> Report:
    """Every split that was loaded (a reader asked for fewer splits returns None for the others)."""
    named = (("train", data.train), ("val", data.val), ("test", data.test))
    splits = {name: split for name, split in named if split is not None}
    report = Report(data.meta, [_summarize(name, split, data.meta) for name, split in splits.items()])
    report.warnings += list(getattr(data, "warnings", []))  # the reader's own: e.g. the images it skipped
    for s in report.splits:
        if s.non_finite:
            report.fatal.append(f"{s.name}: {s.non_finite} of {s.samples} samples hold NaN or inf values.")
    if data.meta.kind == "classification":
        report.warnings += _class_problems(report)
        report.warnings += _copies(splits)
    report.warnings += _blank(report) + _normalization(report) + _unscaled(data)
    if data.test is None:
        report.warnings.append("no test split: `trainkit train` reports no test metrics, and `trainkit eval` "
                               "needs one (for mnist_csv set data.test_csv).")
    return report


def _summarize(name: str, split: Split, meta: DataMeta) -> SplitSummary:
    x = split.x
    n = len(split)
    channels = x.shape[1] if x.dim() >= 2 else 1
    total, squares = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
    constant = non_finite = 0
    for start in range(0, n, CHUNK):
        chunk = x[start:start + CHUNK].to(torch.float64) / meta.scale
        flat = chunk.reshape(len(chunk), channels, -1)
        total += flat.sum(dim=(0, 2))
        squares += (flat * flat).sum(dim=(0, 2))
        rows = chunk.reshape(len(chunk), -1)
        constant += int((rows == rows[:, :1]).all(dim=1).sum())
        non_finite += int((~torch.isfinite(rows)).any(dim=1).sum())
    count = n * (x[0].numel() // channels) if n else 1
    mean = total / count
    std = (squares / count - mean * mean).clamp(min=0).sqrt()
    counts = None
    if meta.kind == "classification" and split.y is not None:
        counts = torch.bincount(split.y, minlength=meta.num_outputs).tolist()
    return SplitSummary(
        name=name, samples=n, labeled=split.y is not None, shape=list(x.shape[1:]), dtype=str(x.dtype).removeprefix("torch."),
        min=float(x.min()) if n else 0.0, max=float(x.max()) if n else 0.0, mean=mean.tolist(), std=std.tolist(),
        class_counts=counts, constant=constant, non_finite=non_finite,
    )


def _class_problems(report: Report) -> list[str]:
    names = report.meta.class_names or [str(i) for i in range(report.meta.num_outputs)]
    problems = []
    for s in report.splits:
        if s.class_counts is None:
            continue
        missing = [names[c] for c, k in enumerate(s.class_counts) if k == 0]
        if missing:
            problems.append(f"{s.name}: no samples of class {', '.join(missing)} (of {len(names)} classes).")
        present = [k for k in s.class_counts if k > 0]
        if s.name == "train" and present and max(present) > IMBALANCE * min(present):
            top, low = s.class_counts.index(max(present)), s.class_counts.index(min(present))
            problems.append(f"train: classes are imbalanced: {names[top]} has {max(present)} samples, "
                            f"{names[low]} only {min(present)}; accuracy alone may mislead.")
    return problems


def _copies(splits: dict[str, Split]) -> list[str]:
    """Exact copies of a sample inside train, and of val/test samples in train: they inflate the scores."""
    if "train" not in splits:
        return []
    keys = {name: _row_hashes(split.x) for name, split in splits.items()}
    train = np.unique(keys["train"])
    problems = []
    inside = len(keys["train"]) - len(train)
    if inside:
        problems.append(f"train: {inside} samples are exact copies of other train samples.")
    for name in ("val", "test"):
        if name in keys:
            leaked = int(np.isin(keys[name], train, assume_unique=False).sum())
            if leaked:
                problems.append(f"{name}: {leaked} of {len(keys[name])} samples also appear in train (exact "
                                f"copies): {name} metrics will overstate how well the model generalizes.")
    return problems


def _row_hashes(x: torch.Tensor) -> np.ndarray:
    """A 64-bit hash of each sample's bytes, 8 bytes per sample: a set of Python objects would cost ten times that,
    and a big store is read a chunk at a time, never copied whole. Vectorized over a chunk: a hash per row in Python
    (blake2b) took 0.12 s of every MNIST run's start; this takes a few milliseconds."""
    rows = x.reshape(len(x), -1)
    out = np.empty(len(x), dtype=np.uint64)
    # The mixing holds about three copies of a chunk as 64-bit words: chunks of at most 8 MB keep that small for big
    # images too (a memory-capped run of 224x224 images was killed with CHUNK rows at a time).
    step = max(1, min(CHUNK, HASH_BYTES // max(1, rows.shape[1] * rows.element_size())))
    for start in range(0, len(x), step):
        chunk = np.ascontiguousarray(rows[start:start + step].numpy())
        out[start:start + len(chunk)] = _hash64(chunk.view(np.uint8).reshape(len(chunk), -1))
    return out


HASH_BYTES = 8 << 20
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _hash64(rows: np.ndarray) -> np.ndarray:
    """Each row of bytes as 64-bit words, every word mixed on its own (splitmix64's multiply-xorshift, so a change
    in any bit spreads through the word), then combined with a different odd weight per position: equal rows give
    equal hashes, and distinct ones collide with a chance of about 2**-64 per pair."""
    n, width = rows.shape
    if width % 8:  # zero-padded to whole words (all rows of a split have the same width, so padding never collides)
        padded = np.zeros((n, width + 8 - width % 8), dtype=np.uint8)
        padded[:, :width] = rows
        rows = padded
    words = rows.view(np.uint64)
    with np.errstate(over="ignore"):
        words = (words ^ (words >> np.uint64(30))) * _MIX[0]
        words ^= words >> np.uint64(27)
        words *= _MIX[1]
        words ^= words >> np.uint64(31)
        weights = np.arange(1, words.shape[1] + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) | np.uint64(1)
        words *= weights
        return words.sum(axis=1, dtype=np.uint64)


def _blank(report: Report) -> list[str]:
    return [f"{s.name}: {s.constant} samples have every value equal (blank images?)."
            for s in report.splits if s.constant and len(s.shape) == 3]


def _normalization(report: Report) -> list[str]:
    meta, train = report.meta, next((s for s in report.splits if s.name == "train"), None)
    if train is None or meta.mean is None or meta.std is None or len(meta.mean) != len(train.mean):
        return []
    far = any(abs(m - c) > MEAN_TOLERANCE for m, c in zip(train.mean, meta.mean)) or any(
        not 1 / STD_RATIO < s / c < STD_RATIO for s, c in zip(train.std, meta.std) if s > 0)
    if not far:
        return []
    fmt = lambda values: "[" + ", ".join(f"{v:.4f}" for v in values) + "]"  # noqa: E731
    return [f"train: the configured normalization (data.mean={fmt(meta.mean)} data.std={fmt(meta.std)}) is far "
            f"from this data's own (mean {fmt(train.mean)}, std {fmt(train.std)}); for this data set "
            f"data.mean={fmt(train.mean)} data.std={fmt(train.std)}."]


def _unscaled(data: DataSplits) -> list[str]:
    """uint8 samples that the batch loader does not scale: the model would see 0..255, where it was meant to see 0..1
    (a DataMeta written without scale=255.0)."""
    split = next((s for s in (data.train, data.val, data.test) if s is not None), None)
    meta = data.meta
    if split is None or split.x.dtype != torch.uint8 or meta.scale != 1.0:
        return []
    return [f"data={meta.name} holds uint8 samples (pixels 0..255?) and its DataMeta says scale=1.0, so the model "
            f"trains on values 0..{int(split.x.max()) if len(split) else 255}. If they are pixels, give "
            f"DataMeta(..., scale=255.0) (and a mean and std of the scaled pixels, or none)."]


def training_problems(data: DataSplits) -> tuple[list[str], list[str]]:
    """What `trainkit train` refuses and what it warns about before training, cheaply: (fatal, warnings).

    Fatal for classification: a training split of one class, or a val/test split with classes the training
    split has none of (the model cannot learn them; a label column read wrongly looks exactly like this).
    Warnings: val/test samples that are exact copies of training samples (their metrics overstate), and uint8
    samples that are not scaled."""
    if data.meta.kind != "classification" or data.train is None or data.train.y is None:
        return [], _unscaled(data)
    names = data.meta.class_names or [str(i) for i in range(data.meta.num_outputs)]
    train = torch.bincount(data.train.y, minlength=data.meta.num_outputs)
    fatal = []
    present = train.nonzero().flatten().tolist()
    if len(present) == 1:
        fatal.append(f"the training split has one class only: all {len(data.train)} samples are labeled "
                     f"{names[present[0]]}, so the model can only learn to say {names[present[0]]}. Check the label "
                     f"column (a headerless CSV has the label first, then the pixels).")
    for name, split in (("val", data.val), ("test", data.test)):
        if split is None or split.y is None or len(present) == 1:
            continue
        counts = torch.bincount(split.y, minlength=data.meta.num_outputs)
        unseen = [c for c in counts.nonzero().flatten().tolist() if train[c] == 0]
        if unseen:
            fatal.append(f"the {name} split has classes the training split has no sample of: "
                         + ", ".join(f"{names[c]} ({int(counts[c])} {name} samples)" for c in unseen)
                         + f"; training counts per class: {train.tolist()}. The model cannot learn them.")
    splits = {name: s for name, s in (("train", data.train), ("val", data.val), ("test", data.test)) if s is not None}
    warnings = [w for w in _copies(splits) if not w.startswith("train:")] + _unscaled(data)
    return fatal, warnings
