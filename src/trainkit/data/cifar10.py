"""Reads CIFAR-10 from the official python batches (cifar-10-batches-py/) into uint8 tensors, safely.

Batches are unpickled against an allow-list, so no code in them runs; the batch loader normalizes and batches.
"""

from __future__ import annotations

import codecs
import functools
import importlib
import io
import pickle
import pickletools
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from trainkit.data.base import SPLITS, DataError, DataMeta, DataSplits, Split, asked_splits, carve
from trainkit.data.cache import cached, fingerprint, stored_split
from trainkit.data.normalization import normalization

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e9d9d70"  # of the archive, checked on download only: re-packed batches load
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load(
    root: str,  # the directory that holds cifar-10-batches-py/ (torchvision's convention)
    download: bool = False,
    val_fraction: float = 0.1,  # of the train images (after any test hold-back), for validation
    seed: int = 0,  # of the carves
    test_fraction: float = 0.0,  # > 0: hold back this much of the train batches as test, ignore test_batch
    mean: list[float] | None = (0.4914, 0.4822, 0.4465),  # per channel, of pixels scaled to 0..1; null: none
    std: list[float] | None = (0.2470, 0.2435, 0.2616),
    cache: bool = True,  # keep the batches in the sample store (.tkcache/ beside them); false: unpickle each time
    *,
    splits: tuple[str, ...] = SPLITS,  # which to return; not a config key: the command knows what it needs
) -> DataSplits:
    """Train from data_batch_1..5 (those present), test from test_batch or held back from train.

    Asked for test alone, only test_batch is read, unless data.test_fraction carves test from the train batches.
    """
    asked = asked_splits(splits, "cifar10")
    mean, std = normalization(mean, std, 3, "cifar10")
    _check_fraction("data.val_fraction", val_fraction, zero_ok=False)
    _check_fraction("data.test_fraction", test_fraction, zero_ok=True)
    folder = Path(root).expanduser().absolute() / FOLDER
    if download:
        _download(folder)
    carving = bool(asked & {"train", "val"})  # train is what the val carve leaves: either needs both carves
    train = val = test = None
    if carving or (test_fraction > 0 and "test" in asked):
        train = _read_batches(_train_files(folder), cache)
        if test_fraction > 0:  # also when test is not asked for: train must be what a full load leaves
            train, test = _carve(train, test_fraction, seed, "data.test_fraction")
    if test_fraction == 0 and "test" in asked:
        if not folder.is_dir():
            raise _missing(folder, "the folder does not exist", what="test batch")
        test = _read_batches([_test_file(folder)], cache)
    if carving:
        train, val = _carve(train, val_fraction, seed, "data.val_fraction")
    meta = DataMeta(
        name="cifar10", kind="classification", in_shape=(3, 32, 32), num_outputs=10,
        class_names=_class_names(folder), scale=255.0, mean=mean, std=std, target_shape=(),
    )
    return DataSplits.asked(asked, train, val, test, meta)


def find_problems(root: str, **_: object) -> list[str]:
    """What is wrong with each batch file under root (not only the first bad one), for `trainkit data check`."""
    folder = Path(root).expanduser().absolute() / FOLDER
    problems = []
    for name in (*TRAIN_BATCHES, "test_batch"):
        if (folder / name).is_file():
            try:
                _read_batch(folder / name)
            except DataError as err:
                problems.append(str(err))
    return problems


def _check_fraction(key: str, value: float, zero_ok: bool) -> None:
    if not (0 <= value < 1 if zero_ok else 0 < value < 1):
        allowed = "0 (off) or a fraction below 1" if zero_ok else "a fraction strictly between 0 and 1"
        raise DataError(f"cifar10: {key}={value!r} is not {allowed}. Set e.g. {key}=0.1.")


def _carve(split: Split, fraction: float, seed: int, key: str) -> tuple[Split, Split]:
    try:
        return carve(split, fraction, seed)
    except DataError as err:
        raise DataError(f"cifar10: {key}={fraction}: {err}") from None


def _download(folder: Path) -> None:
    """Fetch and unpack the official archive into folder's parent, unless the batches are there."""
    if (folder / TRAIN_BATCHES[0]).is_file():
        return
    from torchvision.datasets.utils import download_and_extract_archive  # only here: it is slow to import

    try:
        download_and_extract_archive(URL, download_root=str(folder.parent), md5=MD5)
    except Exception as err:  # offline, proxy, bad checksum, broken archive: all end the same for a person
        raise DataError(
            f"cifar10: could not download {URL} into {folder.parent} ({type(err).__name__}: {err}). "
            f"Without internet, copy the extracted folder to {folder} yourself (it holds data_batch_1.."
            f"data_batch_5 and test_batch) and set data.download=false."
        ) from err


def _missing(folder: Path, reason: str, what: str = "training batches") -> DataError:
    """Where the files should be and the ways to get them there."""
    hint = ""
    if (folder.parent / Path(URL).name).is_file():
        hint = (f" {folder.parent} holds {Path(URL).name}: data.download=true checks and extracts it without "
                f"downloading.")
    if (folder.parent / TRAIN_BATCHES[0]).is_file():
        hint = (f" {folder.parent} itself holds batches, but data.root is the folder above {FOLDER}/: "
                f"set data.root={folder.parent.parent}.")
    return DataError(
        f"cifar10: no CIFAR-10 {what} at {folder} ({reason}).{hint} Put the official python "
        f"batches there (data_batch_1..data_batch_5 and test_batch, extracted from "
        f"cifar-10-python.tar.gz), or set data.download=true to fetch them, or set data.root to the "
        f"directory that holds {FOLDER}/."
    )


def _train_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise _missing(folder, "the folder does not exist")
    present = [folder / name for name in TRAIN_BATCHES if (folder / name).is_file()]
    if not present:
        raise _missing(folder, f"none of {', '.join(TRAIN_BATCHES)} is there")
    if present[0].name != TRAIN_BATCHES[0]:
        found = ", ".join(p.name for p in present)
        raise _missing(folder, f"{TRAIN_BATCHES[0]} is missing; found only {found}")
    return present


def _test_file(folder: Path) -> Path:
    test = folder / "test_batch"
    if not test.is_file():
        raise DataError(
            f"cifar10: the test batch {test} is missing. Put test_batch from cifar-10-python.tar.gz "
            f"there, or set data.test_fraction=0.2 to hold back a part of the train batches as the "
            f"test split instead."
        )
    return test


def _read_batches(files: list[Path], cache: bool = True) -> Split:
    """The batches as one split, from the sample store (made from them once, in `.tkcache/` beside them)."""
    def build() -> dict[str, np.ndarray]:
        parts = [_read_batch(file) for file in files]
        x = np.concatenate([data for data, _ in parts]).reshape(-1, 3, 32, 32)
        return {"x": x, "y": np.concatenate([labels for _, labels in parts]).astype(np.int64)}

    names = "+".join(file.name for file in files)  # a copy missing a batch makes a store of its own
    extra = {file.name: fingerprint(file) for file in files[1:]} if cache else None
    arrays = cached(files[0], f"cifar10-{names}", build, enabled=cache, extra=extra)
    x, y = stored_split(arrays)
    return Split(x, y)


def _read_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """(data uint8 N×3072, labels N) from one batch file, checked."""
    batch = _unpickle(file)
    if not isinstance(batch, dict) or not {"data", "labels"} <= set(batch):
        found = f"keys {', '.join(map(repr, list(batch)[:6]))}" if isinstance(batch, dict) else (
            type(batch).__name__)
        raise _corrupt(file, f"holds {found}, expected a dict with 'data' and 'labels'")
    data = batch["data"]
    try:
        labels = np.asarray(batch["labels"])
    except (ValueError, TypeError):  # ragged nesting
        raise _corrupt(file, "has labels that are not a flat list of integers") from None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32):
        found = f"{data.dtype} {'×'.join(map(str, data.shape))}" if isinstance(data, np.ndarray) else (
            type(data).__name__)
        raise _corrupt(file, f"has data of {found}, expected uint8 N×3072 (R, G, B planes of 32×32)")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise _corrupt(file, f"has {labels.size} labels of {labels.dtype} for {len(data)} images, "
                             f"expected one integer label per image")
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        raise _corrupt(file, f"has label {labels[bad[0]]} at index {bad[0]}, expected a class 0..9")
    return data, labels


def _corrupt(file: Path, what: str) -> DataError:
    return DataError(
        f"cifar10: {file} {what}. It is not a valid CIFAR-10 batch: replace it with the one from "
        f"cifar-10-python.tar.gz (data.download=true fetches it after you delete the folder)."
    )


def _class_names(folder: Path) -> list[str]:
    """label_names from batches.meta when it is there and sane, else the official ten."""
    file = folder / "batches.meta"
    if not file.is_file():
        return list(CLASS_NAMES)
    try:
        meta = _unpickle(file)
    except _Refused:
        raise
    except DataError:
        return list(CLASS_NAMES)  # a broken meta file costs only the names
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if not isinstance(names, (list, tuple)) or len(names) != 10:
        return list(CLASS_NAMES)
    names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    return names if all(isinstance(n, str) and n for n in names) else list(CLASS_NAMES)


class _Refused(DataError):
    """A pickle asked for a global outside the allow-list: a security refusal, never silently skipped."""


def _unpickle(file: Path) -> Any:
    """The pickled object, with dict keys as str; only numpy array reconstruction may be called."""
    try:
        blob = file.read_bytes()
        _check_memo(blob)
        obj = _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()  # py2 pickles: str → bytes, as written
    except _Refused as err:
        raise _Refused(
            f"cifar10: {file} asks to call {err}, which a CIFAR-10 batch never needs; refused before "
            f"anything ran. Do not use this file: replace it with the one from cifar-10-python.tar.gz."
        ) from None
    except Exception as err:  # truncated or garbled pickles fail in many ways; all mean the same here
        raise _corrupt(file, f"is truncated or corrupt ({type(err).__name__}: {err})") from None
    if isinstance(obj, dict):
        obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    return obj


MEMO_LIMIT = 1_000_000  # a batch's pickle memoizes a few entries per image; the official ones about 10,000 in all


def _check_memo(blob: bytes) -> None:
    """Refuse a memo index no batch needs: the unpickler sizes its memo table by the largest index it is given,
    so one garbled PUT can ask for gigabytes before anything is read (a file that would hang the machine)."""
    for opcode, arg, _ in pickletools.genops(blob):
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET") and int(arg) > MEMO_LIMIT:
            raise ValueError(f"a memo index of {int(arg):,}, where a batch needs at most {MEMO_LIMIT:,}")


class _BatchUnpickler(pickle.Unpickler):
    # find_class runs when a pickle names a global, before anything can call it: refusing here is enough
    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed()
        if (module, name) not in allowed:
            raise _Refused(f"{module}.{name}")
        return allowed[(module, name)]


@functools.cache
def _allowed() -> dict[tuple[str, str], Callable[..., Any]]:
    """What pickled numpy arrays need, under the module names numpy 1.x and 2.x write."""
    core = importlib.import_module("numpy._core" if hasattr(np, "_core") else "numpy.core")
    table: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        table[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        table[(f"{package}.multiarray", "scalar")] = core.multiarray.scalar  # labels as numpy ints
        table[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer  # pickle protocol 5
    return table


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Python 3 pickles bytes at protocol 2 as _codecs.encode(text, 'latin1'); nothing else passes."""
    if encoding not in ("latin1", "latin-1") or errors != "strict" or not isinstance(text, str):
        raise _Refused(f"_codecs.encode(..., {encoding!r}, {errors!r})")
    return codecs.encode(text, "latin1")
