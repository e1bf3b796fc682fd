"""Reads torchvision's in-memory image classification sets (MNIST, CIFAR-10, SVHN, ...) through torchvision's own
dataset classes and downloads, into uint8 tensors; the batch loader normalizes and batches.

The training set is torchvision's train split (validation is carved from it), the test split is its test split.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainkit.data.base import (SPLITS, DataError, DataMeta, DataSplits, Split, asked_splits, carve,
                                 check_fractions)
from trainkit.data.cache import FOLDER, cached, stored_split
from trainkit.data.images import channel_stats
from trainkit.data.normalization import normalization

WHO = "torchvision"


@dataclass(frozen=True)
class _Set:
    """How one torchvision data set is asked for its splits, and where its files lie under data.root."""

    kind: str  # "mnist" (idx files), "cifar" (python pickles) or "svhn" (.mat files)
    files: str  # what lies under data.root, for messages
    splits: tuple[str, ...] = ()  # what data.split may be; the first is the default, () takes none
    split_required: bool = False


_IDX = "{name}/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)"
SETS = {
    "MNIST": _Set("mnist", _IDX),
    "FashionMNIST": _Set("mnist", _IDX),
    "KMNIST": _Set("mnist", _IDX),
    "EMNIST": _Set("mnist", "EMNIST/raw/ (emnist-{split}-train-images-idx3-ubyte and the other three of the split)",
                   ("byclass", "bymerge", "balanced", "letters", "digits", "mnist"), split_required=True),
    # data.split chooses QMNIST's test set: all 60,000 test digits, the 10,000 of MNIST's test set, or the rest
    "QMNIST": _Set("mnist", "QMNIST/raw/ (qmnist-train-images-idx3-ubyte, qmnist-train-labels-idx2-int, "
                            "qmnist-test-images-idx3-ubyte, qmnist-test-labels-idx2-int)", ("test", "test10k", "test50k")),
    "CIFAR10": _Set("cifar", "cifar-10-batches-py/ (data_batch_1..data_batch_5, test_batch, batches.meta)"),
    "CIFAR100": _Set("cifar", "cifar-100-python/ (train, test, meta)"),
    "SVHN": _Set("svhn", "train_32x32.mat and test_32x32.mat"),
}


def load(
    dataset: str,  # a torchvision.datasets class name: MNIST, FashionMNIST, KMNIST, EMNIST, QMNIST, CIFAR10, ...
    root: str = "data",  # torchvision's root: the folder that holds MNIST/, cifar-10-batches-py/, ...
    download: bool = False,  # true: fetch the files with torchvision's own (checksummed) download when missing
    split: str | None = None,  # EMNIST: byclass, bymerge, balanced, letters, digits or mnist; QMNIST: its test set
    val_fraction: float = 0.1,  # of torchvision's train split (after any test hold-back), for validation
    test_fraction: float = 0.0,  # > 0: hold back this much of the train split as test; the set's test split unread
    seed: int = 0,  # of the carves
    normalize: bool = True,  # false: pixels are only scaled to 0..1
    mean: list[float] | None = None,  # per channel, of pixels scaled to 0..1; null: computed from the train split
    std: list[float] | None = None,
    *,
    splits: tuple[str, ...] = SPLITS,  # which to return; not a config key: the command knows what it needs
) -> DataSplits:
    """Train and val from torchvision's train split, test from its test split (or held back from train).
    Normalization, unless given, is the training images' own (the train split less any test hold-back, before
    the validation carve), so the metadata is the same whichever splits are asked for."""
    asked = asked_splits(splits, WHO)
    name, spec = _find(dataset)
    split = _split(name, spec, split)
    check_fractions(WHO, val_fraction, test_fraction, "test on the set's test split")
    folder = Path(root).expanduser().absolute()
    stats = normalize and mean is None and std is None
    train = val = test = None
    classes: list[str] = []
    if asked & {"train", "val"} or stats or (test_fraction > 0 and "test" in asked):
        train, classes = _read(name, spec, folder, True, split, download)
        if test_fraction > 0:  # also when test is not asked for: train must be what a full load leaves
            train, test = _carve(train, test_fraction, seed, name, "data.test_fraction")
    if test_fraction == 0 and "test" in asked:
        test, classes = _read(name, spec, folder, False, split, download)
    if not normalize:
        mean, std = None, None
    elif stats:
        mean, std = channel_stats(train.x)
    if asked & {"train", "val"}:
        train, val = _carve(train, val_fraction, seed, name, "data.val_fraction")
    shape = tuple((train if train is not None else test).x.shape[1:])
    mean, std = normalization(mean, std, shape[0], f"{WHO} {name}")
    meta = DataMeta(
        name=f"{WHO}:{name}", kind="classification", in_shape=shape, num_outputs=len(classes),
        class_names=classes, scale=255.0, mean=mean, std=std, target_shape=(),
    )
    return DataSplits.asked(asked, train, val, test, meta)


def _carve(split: Split, fraction: float, seed: int, name: str, key: str) -> tuple[Split, Split]:
    try:
        return carve(split, fraction, seed)
    except DataError as err:
        raise DataError(f"{WHO}: {name} with {key}={fraction}: {err}") from None


def _find(dataset: str) -> tuple[str, _Set]:
    """The set's torchvision spelling (cifar10 finds CIFAR10) and its description."""
    by_lower = {name.lower(): name for name in SETS}
    name = by_lower.get(str(dataset).lower().replace("-", "").replace("_", ""))
    if name is None:
        raise DataError(f"{WHO}: data.dataset={dataset!r} is not one of the image classification sets trainkit reads "
                        f"through torchvision: {', '.join(SETS)}. Set e.g. data.dataset=CIFAR10.")
    return name, SETS[name]


def _split(name: str, spec: _Set, split: str | None) -> str | None:
    if split is None and not spec.split_required:
        return spec.splits[0] if spec.splits else None
    if spec.splits and split in spec.splits:
        return split
    if not spec.splits:
        raise DataError(f"{WHO}: data.split={split!r} means nothing for {name}, which has one train and one test "
                        f"split. Set data.split=null.")
    given = "is required" if split is None else f"={split!r} is not one of its splits"
    raise DataError(f"{WHO}: {name}'s data.split {given}: set data.split to one of {', '.join(spec.splits)} "
                    f"(e.g. data.split={spec.splits[2 if name == 'EMNIST' else 0]}).")


def _read(name: str, spec: _Set, root: Path, train: bool, split: str | None,
          download: bool) -> tuple[Split, list[str]]:
    """One of torchvision's splits as uint8 N×C×H×W and int64 labels, with the set's class names."""
    if spec.kind == "cifar":
        _refuse_unsafe_pickles(_classes()[name], root, train)
    try:
        dataset = _construct(name, root, train, split, download)
    except DataError:
        raise
    except Exception as err:
        raise _failure(name, spec, root, train, split, download, err) from None
    return _stored(name, root, train, split, dataset), _class_names(dataset)


def _stored(name: str, root: Path, train: bool, split: str | None, dataset: Any) -> Split:
    """The set's split in the sample store, keyed by every file under the folder torchvision read it from: the
    process keeps only the memory map, not torchvision's in-memory copy."""
    folder = Path(getattr(dataset, "raw_folder", None) or root / getattr(dataset, "base_folder", ""))
    files = sorted(p for p in folder.rglob("*") if p.is_file() and FOLDER not in p.parts)
    if not files:
        return _arrays(name, dataset)
    tag = f"{name}-{'train' if train else 'test'}-{split}"
    stamp = {p.relative_to(folder).as_posix(): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}

    def build() -> dict[str, np.ndarray]:
        arrays = _arrays(name, dataset)
        return {"x": arrays.x.numpy(), "y": arrays.y.numpy()}

    x, y = stored_split(cached(files[0], tag, build, extra={"files": stamp}))
    return Split(x, y)


def _construct(name: str, root: Path, train: bool, split: str | None, download: bool) -> Any:
    cls = _classes()[name]
    if name == "EMNIST":
        return cls(str(root), split=split, train=train, download=download)
    if name == "QMNIST":
        return cls(str(root), what="train" if train else split, compat=True, download=download)
    if name == "SVHN":
        return cls(str(root), split="train" if train else "test", download=download)
    return cls(str(root), train=train, download=download)


def _arrays(name: str, dataset: Any) -> Split:
    """torchvision keeps the pixels as a uint8 tensor N×H×W (MNIST family) or an array N×H×W×3 (CIFAR) or N×3×H×W
    (SVHN), and the labels as `targets` or `labels`."""
    data = dataset.data
    x = torch.as_tensor(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    if x.dim() == 3:
        x = x.unsqueeze(1)
        if name == "EMNIST":  # its files hold each picture transposed, which torchvision leaves to the user
            x = x.transpose(2, 3)  # (pytorch/vision#8783): upright, predict sees new scans as training saw these
    elif x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(dataset.targets if hasattr(dataset, "targets") else dataset.labels))
    if labels.dim() == 2:  # QMNIST's full records: the class is the first column (what compat=True gives)
        labels = labels[:, 0]
    return Split(x.to(torch.uint8).contiguous(), labels.to(torch.int64).contiguous())


def _class_names(dataset: Any) -> list[str]:
    """The set's `classes` (SVHN has none: its classes are the digits 0..9, digit 0 stored as label 10 and
    given index 0 by torchvision)."""
    classes = getattr(dataset, "classes", None)
    return [str(c) for c in classes] if classes else [str(i) for i in range(10)]


def _failure(name: str, spec: _Set, root: Path, train: bool, split: str | None, download: bool,
             err: Exception) -> DataError:
    files = spec.files.format(name=name, split=split)
    cause = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    if download and not _present(name, root, train, split):
        return DataError(
            f"{WHO}: could not download {name} into data.root={root} ({cause}). Without internet, put the files "
            f"there yourself ({files}) and set data.download=false."
        )
    if not _present(name, root, train, split):
        return DataError(
            f"{WHO}: no {name} files under data.root={root}: torchvision looks for {files}. Set data.download=true "
            f"to fetch them (torchvision's own download, checksummed), or set data.root to the folder that holds "
            f"them."
        )
    return DataError(
        f"{WHO}: torchvision could not read {name} from data.root={root} ({cause}): the files ({files}) are damaged "
        f"or not {name}'s. Delete them and set data.download=true to fetch them again."
    )


def _present(name: str, root: Path, train: bool, split: str | None) -> bool:
    """Whether the files torchvision checks for before reading a split are there (as it checks, without
    checksums; for CIFAR and SVHN, those of the split)."""
    cls = _classes()[name]
    if name == "SVHN":
        return (root / cls.split_list["train" if train else "test"][1]).is_file()
    if name in ("CIFAR10", "CIFAR100"):
        return all((root / cls.base_folder / f).is_file() for f, _ in (cls.train_list if train else cls.test_list))
    raw = root / name / "raw"
    if name == "EMNIST":
        return all((raw / f"emnist-{split}-{s}-{w}-idx{d}-ubyte").is_file()
                   for s in ("train", "test") for w, d in (("images", 3), ("labels", 1)))
    if name == "QMNIST":
        return all((raw / f"qmnist-{s}-{w}").is_file() for s in ("train", "test")
                   for w in ("images-idx3-ubyte", "labels-idx2-int"))
    return all((raw / f"{s}-{w}").is_file() for s in ("train", "t10k") for w in ("images-idx3-ubyte", "labels-idx1-ubyte"))


def _refuse_unsafe_pickles(cls: Any, root: Path, train: bool) -> None:
    """CIFAR batches are pickles, and torchvision unpickles them with pickle.load, which runs whatever code a
    pickle names. Each file it will unpickle is read first by trainkit's allow-list unpickler (data/cifar10.py:
    numpy arrays and nothing else), so a file that would run code is refused before torchvision opens it."""
    from trainkit.data import cifar10

    folder = root / cls.base_folder
    for name in [f for f, _ in (cls.train_list if train else cls.test_list)] + [cls.meta["filename"]]:
        if not (folder / name).is_file():
            continue  # torchvision says what is missing, or downloads it
        try:
            cifar10._unpickle(folder / name)
        except cifar10._Refused as err:
            raise DataError(f"{WHO}: refused {folder / name} before torchvision read it: {err}") from None
        except DataError as err:
            raise DataError(
                f"{WHO}: {folder / name} is not a readable CIFAR pickle ({err}). Delete {folder} and set "
                f"data.download=true to fetch the official archive again."
            ) from None


@functools.cache
def _classes() -> dict[str, Any]:
    """torchvision's dataset classes (imported here: torchvision is slow to import), CIFAR and SVHN adjusted.

    torchvision checks the md5 of every CIFAR batch and SVHN .mat file each time it loads them; trainkit checks
    the archive's md5 when it downloads it (torchvision's own download, with the same checksums) and, at load
    time, only that the split's files are there, as torchvision does for the MNIST family. So files re-packed (a
    copy decoded from JPEGs, one without test_batch that data.test_fraction holds a test split back from) or
    written in the exact format by a test load, and a damaged file is refused by the reader (see
    _refuse_unsafe_pickles) instead of by a checksum."""
    from torchvision import datasets

    class CIFAR10(datasets.CIFAR10):
        meta = {**datasets.CIFAR10.meta, "md5": None}

        def _check_integrity(self) -> bool:  # the split's files only: a copy without test_batch trains
            folder = os.path.join(self.root, self.base_folder)
            return all(os.path.isfile(os.path.join(folder, f)) for f, _ in (
                self.train_list if self.train else self.test_list))

    class CIFAR100(datasets.CIFAR100):
        meta = {**datasets.CIFAR100.meta, "md5": None}
        _check_integrity = CIFAR10._check_integrity

    class SVHN(datasets.SVHN):
        def _check_integrity(self) -> bool:
            return os.path.isfile(os.path.join(self.root, self.filename))

        def download(self) -> None:  # torchvision's download_url checks the md5 of a file that is there, and
            if not self._check_integrity():  # fetches it again when it differs: only a missing file is fetched
                super().download()

    adjusted = {"CIFAR10": CIFAR10, "CIFAR100": CIFAR100, "SVHN": SVHN}
    return {name: adjusted.get(name) or getattr(datasets, name) for name in SETS}
