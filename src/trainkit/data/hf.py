"""Reads Hugging Face datasets (a `save_to_disk` folder, a folder of parquet or Arrow files, a name on the Hub) into
trainkit's sample store, so a data set as big as the disk never has to fit in memory.

`datasets` opens the data (and downloads a Hub dataset into its own cache); this module picks the columns, names
the classes, decodes images in threads straight into the store's memory-mapped files, chunk by chunk (an interrupted
decode continues), and carves the splits the data set lacks. Batching, normalizing and augmenting are the loader's.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainkit.data.base import (
    SPLITS,
    DataError,
    DataMeta,
    DataSplits,
    Split,
    asked_splits,
    carve_for,
    check_fractions,
    image_size,
)
from trainkit.data.cache import Writer, cached, stored_split
from trainkit.data.images import GRAY_MODES, progress_bar
from trainkit.data.inputs import ImageInputs, ValueInputs
from trainkit.data.normalization import normalization
from trainkit.extras import MissingExtra
from trainkit.storage import cache_root

WHO = "hf"
IMAGE_COLUMNS = ("image", "img")  # tried in turn when data.image_column is null
LABEL_COLUMNS = ("label", "labels")
# trainkit's split ← the data set's, first match wins; names such as "unsupervised" are left out
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "valid", "val", "dev"), "test": ("test",)}
FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}  # the files a folder may hold: datasets' builder for each
KINDS = ("classification", "regression")
CHUNK_BYTES = 8 << 20  # decoded pixels per chunk: a chunk's encoded bytes are held while it decodes
CHUNK_ROWS = 1024  # at most, per chunk
PROBE_ROWS = 256  # images whose headers are read per step of the probe
FLUSH_BYTES = 256 << 20  # decoded bytes between flushes: each flush marks its chunks done, so a restart skips them
TABLE_ROWS = 65536  # rows of numeric columns converted at a time


@dataclass(frozen=True)
class Target:
    """What the label column means: class indices (from a ClassLabel, else the sorted distinct values) or a number
    to regress."""

    column: str
    kind: str  # "classification" or "regression"
    classes: list[str] | None  # class names, for classification
    values: np.ndarray | None  # the sorted distinct labels that classes name; None: the labels are class indices

    def key(self) -> dict[str, Any]:
        return {"label": self.column, "kind": self.kind, "classes": self.classes}


@dataclass(frozen=True)
class Plan:
    """One data set, opened, with the columns chosen: what reading a split needs."""

    path: str  # data.path, as given
    splits: dict[str, Any]  # trainkit's split name → its datasets.Dataset
    target: Target
    image_column: str | None  # images, or
    feature_columns: list[str] | None  # numeric columns (tabular samples)
    cache: bool


def load(
    path: str,  # a save_to_disk folder, a folder (or file) of parquet or Arrow files, or a data set's name on the Hub
    subset: str | None = None,  # a Hub data set's configuration (load_dataset's second argument), e.g. "mnist"
    image_column: str | None = None,  # null: "image" or "img", else the one column of images
    label_column: str | None = None,  # null: "label" or "labels"
    feature_columns: list[str] | None = None,  # numeric columns: tabular samples (float32 N×D), not images
    kind: str | None = None,  # classification or regression; null: regression for a float label, else classification
    size: list[int] | None = None,  # [H, W]: resize every image to this; null: all images must share one size
    val_fraction: float = 0.1,  # of the training rows, held back for validation (unless it has a validation split)
    test_fraction: float = 0.0,  # > 0: hold back this much of the training rows as test (when it has no test split)
    seed: int = 0,  # of the carves
    normalize: bool = True,  # false: pixels are only scaled to 0..1 (features not normalized)
    mean: list[float] | None = None,  # per channel (or feature); null: computed from the training split
    std: list[float] | None = None,
    cache: bool = True,  # keep decoded samples in the sample store (.tkcache beside the data set's Arrow files)
    *,
    splits: tuple[str, ...] = SPLITS,  # which to return; not a config key: the command knows what it needs
) -> DataSplits:
    """Train, val and test from the data set's own splits (val and test carved from train where it has none),
    images as uint8 N×C×H×W or numeric columns as float32 N×D. The normalization, unless given, is the training
    split's own (less a test hold-back), so the metadata is the same whichever splits are asked for."""
    asked = asked_splits(splits, WHO)
    height_width = _size(size)
    check_fractions(WHO, val_fraction, test_fraction)
    _check_choices(kind, feature_columns, image_column, size)
    opened = _open(path, subset)
    if "test" in opened and test_fraction > 0:
        raise DataError(f"{WHO}: data.path={path} has a test split and data.test_fraction={test_fraction} asks to "
                        f"carve test rows from train as well. Set data.test_fraction=0 to test on its test split.")
    plan = _plan(path, opened, image_column, label_column, feature_columns, kind, cache)
    if "val" in opened and _labels(plan, "val") is None:  # an unlabeled validation split judges nothing: carve one
        del opened["val"]
    if plan.image_column is not None:
        reader: _Reader = _Images(plan, height_width)
    else:
        reader = _Table(plan)
    stats = mean is None and std is None and normalize
    train = val = test = pool = None
    if asked & {"train", "val"} or stats or ("test" in asked and test_fraction > 0):
        pool = reader.read("train")  # then less any test hold-back: what train and val are carved from, and stats read
        if test_fraction > 0:  # also when test is not asked for: train must be what a full load leaves
            pool, test = _carve(pool, test_fraction, seed, "data.test_fraction")
        train = pool
        if "val" not in opened and asked & {"train", "val"}:
            train, val = _carve(pool, val_fraction, seed, "data.val_fraction")
    if "val" in opened and "val" in asked:
        val = reader.read("val")
    if "test" in opened and "test" in asked:
        test = reader.read("test")
    if not normalize:
        mean, std = None, None
    elif stats:
        mean, std = reader.stats(pool, None if test_fraction == 0 else test)
    mean, std = normalization(mean, std, reader.in_shape[0], WHO)
    target = plan.target
    classes = target.classes if target.kind == "classification" else None
    meta = DataMeta(
        name=WHO, kind=target.kind, in_shape=reader.in_shape, num_outputs=len(classes) if classes else 1,
        class_names=classes, scale=reader.scale, mean=mean, std=std,
        target_shape=() if target.kind == "classification" else (1,),
    )
    return DataSplits.asked(asked, train, val, test, meta)


def new_inputs(meta: DataMeta, data: dict[str, Any]) -> ImageInputs | ValueInputs:
    """The reader of new inputs for `trainkit predict`: image files (resized as the training images were, where
    data.size resized them) for a model of images, a CSV of values for one of numeric columns."""
    if len(meta.in_shape) != 3:
        return ValueInputs(meta, data)
    reader = ImageInputs(meta, data)
    reader.resize = data.get("size") is not None
    return reader


def _check_choices(kind: str | None, feature_columns: Any, image_column: str | None, size: Any) -> None:
    if kind is not None and kind not in KINDS:
        raise DataError(f"{WHO}: data.kind={kind!r} is not one of {', '.join(KINDS)}. Set data.kind=classification, "
                        f"data.kind=regression, or data.kind=null to choose by the label column's type.")
    if feature_columns is not None and (image_column is not None or size is not None):
        key = "data.image_column" if image_column is not None else "data.size"
        raise DataError(f"{WHO}: {key} is for images, and data.feature_columns={feature_columns} reads numeric columns "
                        f"instead. Set {key}=null for tabular data, or data.feature_columns=null for images.")


# --- opening the data set -------------------------------------------------------------------------------------------
def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise MissingExtra(
            f"data={WHO} reads Hugging Face datasets with the datasets package, which is not installed: it comes with "
            f"trainkit's optional `hf` extra. Install it with pip install \"trainkit[hf]\" (in a source checkout: pip "
            f"install -e \".[hf]\")."
        ) from None
    return datasets


def _open(path: str, subset: str | None) -> dict[str, Any]:
    """{train, and val and test where it has them: its datasets.Dataset}."""
    if not isinstance(path, str) or not path.strip():
        raise DataError(f"{WHO}: data.path={path!r} names no data set. Set data.path to a folder made by save_to_disk, "
                        f"a folder of parquet or Arrow files, or a data set's name on the Hugging Face Hub.")
    datasets = _datasets()
    local = Path(path).expanduser()
    if subset is not None and (local.exists() or _looks_local(path)):
        raise DataError(f"{WHO}: data.subset={subset} names a configuration of a data set on the Hub, and "
                        f"data.path={path} is a local path. Set data.subset=null.")
    if local.is_dir() and ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file()):
        with _quiet(datasets):
            found = _library_call(path, lambda: datasets.load_from_disk(str(local)))
    elif local.is_dir():
        found = _load_files(datasets, path, _data_files(path, local))
    elif local.is_file():
        if local.suffix.lower() not in FILE_BUILDERS:
            raise DataError(f"{WHO}: data.path={path} is a file, not a parquet or Arrow file (.parquet, .arrow). Set "
                            f"data.path to one, to a folder of them, or to a folder made by save_to_disk.")
        found = _load_files(datasets, path, {"train": [str(local)]})
    elif _looks_local(path):
        raise DataError(f"{WHO}: data.path={path} does not exist (resolved to {local.absolute()}). Set data.path to a "
                        f"folder made by save_to_disk, a folder of parquet or Arrow files, or a data set's name on the "
                        f"Hugging Face Hub (e.g. data.path=uoft-cs/cifar10).")
    else:
        found = _load_hub(datasets, path, subset)
    return _splits(datasets, path, found)


def _looks_local(path: str) -> bool:
    """A path, not a Hub name (`owner/name` or `name`)."""
    return path.startswith(("/", ".", "~")) or Path(path).suffix.lower() in FILE_BUILDERS or not re.fullmatch(
        r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", path)


def _data_files(path: str, folder: Path) -> dict[str, list[str]]:
    """{split: files} as datasets names the splits of a folder of files (train-*.parquet, data/test/*.arrow, ...);
    only parquet or Arrow files, of one kind."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        patterns = get_data_patterns(str(folder))
        resolved = DataFilesDict.from_patterns(patterns, base_path=str(folder))
    except FileNotFoundError:  # datasets' EmptyDatasetError: no file at all
        resolved = {}
    files = {split: [f for f in found if Path(f).suffix.lower() in FILE_BUILDERS] for split, found in resolved.items()}
    files = {split: found for split, found in files.items() if found}
    suffixes = {Path(f).suffix.lower() for found in files.values() for f in found}
    if not files:
        held = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))[:5]
        holds = f"it holds {', '.join(held)}" if held else "it is empty"
        raise DataError(f"{WHO}: data.path={path} holds no parquet or Arrow files and was not made by save_to_disk (no "
                        f"dataset_dict.json or state.json; {holds}). Set data.path to a folder of train-*.parquet and "
                        f"test-*.parquet files (or .arrow), or to a folder that dataset.save_to_disk() wrote.")
    if len(suffixes) > 1:
        raise DataError(f"{WHO}: data.path={path} holds both parquet and Arrow files; datasets reads one kind at a "
                        f"time. Keep one kind in the folder (or put the other in a folder of its own).")
    return files


def _load_files(datasets: Any, path: str, files: dict[str, list[str]]) -> Any:
    builder = FILE_BUILDERS[Path(next(iter(files.values()))[0]).suffix.lower()]
    with _quiet(datasets):
        return _library_call(path, lambda: datasets.load_dataset(builder, data_files=files))


def _library_call(path: str, call: Callable[[], Any]) -> Any:
    """What datasets returns, or its refusal as one paragraph naming data.path."""
    try:
        return call()
    except (OSError, ValueError, TypeError, KeyError) as err:  # datasets' own errors subclass these
        said = " ".join(str(err).split())[:300] or type(err).__name__
        raise DataError(f"{WHO}: datasets could not read data.path={path}: {said}. Check that it was written by "
                        f"datasets (save_to_disk, to_parquet) or is a parquet or Arrow file, whole.") from None


def _load_hub(datasets: Any, name: str, subset: str | None) -> Any:
    """The data set from the Hub, downloaded by datasets into its cache; first a single quick request, so a machine
    without internet is told so at once instead of after datasets' retries."""
    offline = bool(datasets.config.HF_HUB_OFFLINE)
    if not offline:
        problem = _unreachable()
        if problem:
            raise DataError(_offline_message(name, subset, f"the Hub cannot be reached ({problem})", offline))
    try:
        return datasets.load_dataset(name, subset)
    except (datasets.exceptions.DatasetNotFoundError, ConnectionError) as err:
        said = " ".join(str(err).split())[:200]
        if offline:
            cache = datasets.config.HF_DATASETS_CACHE
            reason = f"HF_HUB_OFFLINE is set and it is not in the Hugging Face cache ({cache})"
            raise DataError(_offline_message(name, subset, reason, offline)) from None
        if isinstance(err, ConnectionError):
            raise DataError(_offline_message(name, subset, f"the download failed ({said})", offline)) from None
        raise DataError(f"{WHO}: data.path={name} is no folder or file here, and no data set on the Hugging Face Hub "
                        f"by that name can be read ({said}). Set data.path to a local folder, or to the Hub's name of "
                        f"the data set (owner/name); for a gated or private one, log in first (hf auth "
                        f"login).") from None
    except ValueError as err:  # e.g. a data set with several configurations and no data.subset
        said = " ".join(str(err).split())[:300]
        raise DataError(f"{WHO}: the Hub data set data.path={name} (data.subset={subset}) cannot be loaded: {said}. "
                        f"Set data.subset to one of its configurations where it has several.") from None
    except Exception as err:  # noqa: BLE001 (an HTTP refusal, a full disk: the library's words, in one paragraph)
        said = " ".join(str(err).split())[:300] or type(err).__name__
        raise DataError(f"{WHO}: datasets could not download data.path={name} from the Hugging Face Hub "
                        f"({type(err).__name__}: {said}). For a gated or private data set, log in first (hf auth "
                        f"login); or download it elsewhere, save_to_disk, and set data.path to that folder.") from None


def _unreachable() -> str | None:
    """Why the Hub cannot be reached, or None: one request, no retries, within HF_HUB_ETAG_TIMEOUT seconds."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as err:  # noqa: BLE001 (the HTTP client's errors differ by version: any failure is unreachable)
        return f"{type(err).__name__}: {' '.join(str(err).split())[:150]}"
    return None


def _offline_message(name: str, subset: str | None, reason: str, offline: bool) -> str:
    args = f"'{name}'" + (f", '{subset}'" if subset else "")
    folder = name.rsplit("/", 1)[-1]
    last = ("Or unset HF_HUB_OFFLINE where the Hub can be reached, and datasets downloads it." if offline else
            "If it was downloaded on this machine before, set HF_HUB_OFFLINE=1 to read it from the Hugging Face cache.")
    return (f"{WHO}: data.path={name} is no folder or file here, so it was taken for a data set on the Hugging Face "
            f"Hub, and {reason}. Download it where there is internet and bring it here: python -c \"import datasets; "
            f"datasets.load_dataset({args}).save_to_disk('{folder}')\", then copy the folder {folder} here and set "
            f"data.path to it (or copy the data set's parquet files into a folder and set data.path to that). {last}")


@contextlib.contextmanager
def _quiet(datasets: Any) -> Iterator[None]:
    """datasets' progress bars off while it reads local files (they tell nothing there), as they were after."""
    bars = datasets.utils
    was = bars.are_progress_bars_disabled()
    bars.disable_progress_bars()
    try:
        yield
    finally:
        if not was:
            bars.enable_progress_bars()


def _splits(datasets: Any, path: str, found: Any) -> dict[str, Any]:
    """trainkit's splits from the data set's: train, validation (or valid, val, dev), test; empty ones left out."""
    if isinstance(found, datasets.Dataset):
        named = {"train": found}
    else:
        named = {}
        for ours, theirs in SPLIT_NAMES.items():
            name = next((n for n in theirs if n in found), None)
            if name is not None:
                named[ours] = found[name]
        if "train" not in named:
            raise DataError(f"{WHO}: data.path={path} has the splits {', '.join(found) or 'none'}, and none named "
                            f"train. trainkit trains on the train split (and validates on validation, tests on "
                            f"test): save the data set with a train split, e.g. DatasetDict(train=...).")
    if len(named["train"]) == 0:
        raise DataError(f"{WHO}: the train split of data.path={path} has no rows: there is nothing to train on.")
    return {name: split for name, split in named.items() if len(split)}


# --- columns and labels ---------------------------------------------------------------------------------------------
def _plan(path: str, opened: dict[str, Any], image_column: str | None, label_column: str | None,
          feature_columns: list[str] | None, kind: str | None, cache: bool) -> Plan:
    train = opened["train"]
    columns = train.column_names
    described = ", ".join(f"{c} ({_feature_name(train.features[c])})" for c in columns)
    label = label_column or next((c for c in LABEL_COLUMNS if c in columns), None)
    if label is None or label not in columns:
        key = f"data.label_column={label}" if label_column else (
            f"no data.label_column and no column {' or '.join(LABEL_COLUMNS)}")
        raise DataError(f"{WHO}: {key}: data.path={path} has the columns {described}. Set data.label_column to the "
                        f"column to learn.")
    if feature_columns is not None:
        _check_features(path, train, feature_columns, label, described)
        image = None
    else:
        image = _image_column(path, train, image_column, described)
    for name, split in opened.items():
        missing = [c for c in [image, label, *(feature_columns or [])] if c is not None and c not in split.column_names]
        if missing:
            raise DataError(f"{WHO}: the {name} split of data.path={path} has no column {', '.join(missing)} (it has "
                            f"{', '.join(split.column_names)}), which the train split has. Give every split the same "
                            f"columns.")
    target = _target(path, opened, label, kind)
    return Plan(path, opened, target, image, list(feature_columns) if feature_columns is not None else None, cache)


def _feature_name(feature: Any) -> str:
    kind = type(feature).__name__
    dtype = getattr(feature, "dtype", None)
    return f"{kind} {dtype}" if kind == "Value" else kind


def _image_column(path: str, train: Any, image_column: str | None, described: str) -> str:
    from datasets import Image

    images = [c for c, f in train.features.items() if isinstance(f, Image)]
    column = image_column or next((c for c in IMAGE_COLUMNS if c in train.column_names), None) or (
        images[0] if len(images) == 1 else None)
    if column is None or column not in train.column_names:
        said = f"data.image_column={column}" if image_column else (
            f"no data.image_column, no column {' or '.join(IMAGE_COLUMNS)} and {len(images)} columns of images")
        raise DataError(f"{WHO}: {said}: data.path={path} has the columns {described}. Set data.image_column to "
                        f"its column of images, or data.feature_columns=[...] to its numeric columns (tabular data).")
    if not isinstance(train.features[column], Image):
        raise DataError(f"{WHO}: the column {column} of data.path={path} holds {_feature_name(train.features[column])},"
                        f" not images (datasets.Image). Set data.image_column to a column of images, or "
                        f"data.feature_columns=[...] to numeric columns; its columns are {described}.")
    return column


def _check_features(path: str, train: Any, feature_columns: Any, label: str, described: str) -> None:
    if not isinstance(feature_columns, (list, tuple)) or not feature_columns or not all(
            isinstance(c, str) for c in feature_columns):
        raise DataError(f"{WHO}: data.feature_columns={feature_columns!r} is not a list of column names. Set e.g. "
                        f"data.feature_columns=[x1,x2]; data.path={path} has the columns {described}.")
    for column in feature_columns:
        if column not in train.column_names:
            raise DataError(f"{WHO}: data.feature_columns names {column}, which data.path={path} does not have; it "
                            f"has the columns {described}.")
        if column == label:
            raise DataError(f"{WHO}: data.feature_columns names {column}, the label column: a model would be given "
                            f"the answer. Leave it out of data.feature_columns.")
        if not _numeric(train.features[column]):
            raise DataError(f"{WHO}: the column {column} of data.path={path} holds "
                            f"{_feature_name(train.features[column])}, not numbers; data.feature_columns takes "
                            f"numeric columns (int, float, bool). Its columns are {described}.")


def _numeric(feature: Any) -> bool:
    dtype = str(getattr(feature, "dtype", ""))
    return type(feature).__name__ == "Value" and (dtype.startswith(("int", "uint", "float")) or dtype == "bool")


def _target(path: str, opened: dict[str, Any], column: str, kind: str | None) -> Target:
    """The label column's meaning, the same in every split: a ClassLabel's names, else the sorted distinct values."""
    from datasets import ClassLabel

    feature = opened["train"].features[column]
    for name, split in opened.items():
        theirs = split.features[column]
        if (isinstance(feature, ClassLabel) and theirs != feature) or type(theirs) is not type(feature):
            raise DataError(f"{WHO}: the label column {column} is {feature} in the train split and {theirs} in the "
                            f"{name} split of data.path={path}: a class index must mean one class in every split. "
                            f"Give every split the same ClassLabel.")
    dtype = str(getattr(feature, "dtype", ""))
    if not isinstance(feature, ClassLabel) and not (_numeric(feature) or dtype in ("string", "large_string")):
        raise DataError(f"{WHO}: the label column {column} of data.path={path} holds {_feature_name(feature)}, not one "
                        f"class or number per row. Set data.label_column to a ClassLabel, integer, string or float "
                        f"column.")
    if kind is None:
        kind = "regression" if dtype.startswith("float") else "classification"
    if kind == "regression":
        if dtype in ("string", "large_string"):
            raise DataError(f"{WHO}: data.kind=regression, and the label column {column} holds strings. Set "
                            f"data.kind=classification, or data.label_column to a numeric column.")
        return Target(column, kind, None, None)
    if isinstance(feature, ClassLabel):
        return Target(column, kind, [str(n) for n in feature.names], None)
    distinct = [np.unique(v[~_missing(v)]) for v in (_column(s, column) for s in opened.values())]
    values = np.unique(np.concatenate(distinct)) if distinct else np.array([])
    if len(values) < 2:
        raise DataError(f"{WHO}: the label column {column} of data.path={path} holds {len(values)} distinct value(s): "
                        f"there is nothing to tell apart. Set data.label_column to the column to learn.")
    return Target(column, kind, [str(v) for v in values.tolist()], values)


def _column(split: Any, column: str) -> np.ndarray:
    """One column's values as numpy: objects for strings (None where null), NaN for a null number."""
    return split.with_format("arrow", columns=[column])[:].column(column).to_numpy(zero_copy_only=False)


def _missing(values: np.ndarray) -> np.ndarray:
    """Where a value is null (None, or NaN: how arrow hands over a null in a numeric column)."""
    if values.dtype == object:
        return np.array([v is None or (isinstance(v, float) and math.isnan(v)) for v in values], dtype=bool)
    if values.dtype.kind == "f":
        return np.isnan(values)
    return np.zeros(len(values), dtype=bool)


def _labels(plan: Plan, name: str) -> np.ndarray | None:
    """The split's targets: int64 class indices or float32 N×1; None where it has no labels (all null or -1)."""
    target, split = plan.target, plan.splits[name]
    values = _column(split, target.column)
    missing = _missing(values)
    if target.kind == "classification" and target.values is None:
        missing |= values < 0  # a ClassLabel's -1: datasets' "no label" (a test split's, often)
    if missing.all():
        if name == "train":
            raise DataError(f"{WHO}: the train split of data.path={plan.path} has no labels (its column "
                            f"{target.column} is null or -1 in every row). Set data.label_column to the column to "
                            f"learn.")
        return None
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError(f"{WHO}: the {name} split of data.path={plan.path} has no label in row {row} (column "
                        f"{target.column} is null or -1 there; {int(missing.sum())} of {len(values)} rows are so). "
                        f"Label every row, or drop the unlabeled ones (dataset.filter(...)) and save it again.")
    if target.kind == "regression":
        return values.astype(np.float32).reshape(-1, 1)
    if target.values is None:
        y = values.astype(np.int64)
        outside = np.flatnonzero(y >= len(target.classes or []))
        if len(outside):
            raise DataError(f"{WHO}: the {name} split of data.path={plan.path} has the label {y[outside[0]]} in row "
                            f"{int(outside[0])}, and its ClassLabel names {len(target.classes or [])} classes.")
        return y
    return np.searchsorted(target.values, values).astype(np.int64)


# --- reading splits -------------------------------------------------------------------------------------------------
class _Reader:
    in_shape: tuple[int, ...]
    scale: float

    def read(self, name: str) -> Split: ...

    def stats(self, pool: Split, held: Split | None) -> tuple[tuple[float, ...], tuple[float, ...]]: ...


def _source(split: Any) -> tuple[Path, dict[str, Any]]:
    """The file that keys a split's stores (its first Arrow file: a save_to_disk folder's own, or datasets' cache
    of parquet files or a Hub download), and every Arrow file of it with size and mtime: changed data, new store."""
    files = [Path(f["filename"]) for f in split.cache_files]
    if not files:  # a data set held in memory: keyed by datasets' own fingerprint of it
        source = cache_root() / WHO / f"{split._fingerprint}.fingerprint"
        if not source.is_file():
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text(split._fingerprint + "\n")
        return source, {"rows": len(split)}
    listing = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return files[0], {"files": listing, "rows": len(split)}


def _tag(kind: str, name: str) -> str:
    return f"{WHO}-{kind}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"


def _carve(split: Split, fraction: float, seed: int, key: str) -> tuple[Split, Split]:
    return carve_for(WHO, split, fraction, seed, key)


def _size(size: list[int] | None) -> tuple[int, int] | None:
    return image_size(size, WHO)


class _Table(_Reader):
    """Numeric columns as float32 N×D, built in memory (one float per cell is small next to images) and stored."""

    scale = 1.0

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.columns = plan.feature_columns or []
        self.in_shape = (len(self.columns),)

    def read(self, name: str) -> Split:
        split = self.plan.splits[name]
        source, extra = _source(split)

        def build() -> dict[str, np.ndarray]:
            x = np.empty((len(split), len(self.columns)), dtype=np.float32)
            for start in range(0, len(split), TABLE_ROWS):
                table = split.with_format("arrow", columns=self.columns)[start:start + TABLE_ROWS]
                for j, column in enumerate(self.columns):
                    values = table.column(column).to_numpy(zero_copy_only=False)
                    x[start:start + len(values), j] = np.asarray(values, dtype=np.float32)
            bad = ~np.isfinite(x)
            if bad.any():
                row, j = (int(v) for v in np.argwhere(bad)[0])
                raise DataError(f"{WHO}: the {name} split of data.path={self.plan.path} has no number in row {row} of "
                                f"column {self.columns[j]} (null, NaN or inf; {int(bad.any(1).sum())} rows have such "
                                f"cells). Fill or drop those rows and save the data set again.")
            y = _labels(self.plan, name)
            return {"x": x} if y is None else {"x": x, "y": y}

        key = {**extra, "columns": self.columns, **self.plan.target.key()}
        arrays = cached(source, _tag("table", name), build, enabled=self.plan.cache, extra=key)
        return Split(*stored_split(arrays))

    def stats(self, pool: Split, held: Split | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Each feature's mean and std over the training rows (a constant feature's std is 1: left as it is), in
        float64, a block of rows at a time: no float64 copy of the whole split."""
        x, blocks = pool.x, range(0, len(pool.x), TABLE_ROWS)
        mean = sum(x[s:s + TABLE_ROWS].double().sum(0) for s in blocks) / len(x)
        var = sum(((x[s:s + TABLE_ROWS].double() - mean) ** 2).sum(0) for s in blocks) / len(x)
        std = var.sqrt()
        return tuple(mean.tolist()), tuple(torch.where(std > 0, std, torch.ones_like(std)).tolist())


class _Images(_Reader):
    """An Image column as uint8 N×C×H×W: headers read first (the shape), then decoded into the store in chunks."""

    scale = 255.0

    def __init__(self, plan: Plan, size: tuple[int, int] | None) -> None:
        self.plan, self.size = plan, size
        self.column = plan.image_column or ""
        self.counts: np.ndarray | None = None  # the train split's pixel histograms, C×256, once it is read
        probes = {name: self._probe(name) for name in plan.splits}
        channels = 3 if any(p[0] for p in probes.values()) else 1
        if size is not None:
            self.in_shape: tuple[int, ...] = (channels, *size)
            return
        first = probes["train"][1:3].tolist()
        for name, probe in probes.items():  # each split's row 0 against train's, then its own first odd row
            own, row, other = probe[1:3].tolist(), int(probe[3]), probe[4:6].tolist()
            if own != first:
                row, other = 0, own
            if row >= 0:
                raise DataError(
                    f"{WHO}: the images of data.path={plan.path} are not all of one size: row 0 of the train split is "
                    f"{first[0]}×{first[1]} (H×W) and row {row} of the {name} split is {other[0]}×{other[1]}. Set "
                    f"data.size=[H,W] to resize every image to one size, e.g. data.size=[{first[0]},{first[1]}].")
        self.in_shape = (channels, *first)

    def _probe(self, name: str) -> np.ndarray:
        """int64 [any colour, H, W of row 0, the first row of another size (-1: none), its H, W]."""
        split = self.plan.splits[name]
        source, extra = _source(split)

        def build() -> dict[str, np.ndarray]:
            colour, first, other = 0, None, [-1, 0, 0]
            for start, values in _raw_chunks(split, self.column, PROBE_ROWS):
                for i, value in enumerate(values):
                    try:
                        with _opened(value) as image:
                            width, height = image.size
                            colour = colour or _has_colour(image)
                    except Exception as err:  # noqa: BLE001 (every decoder fails its own way on a foreign file)
                        raise self._unreadable(name, start + i, err) from None
                    first = first or (height, width)
                    if other[0] < 0 and (height, width) != first:
                        other = [start + i, height, width]
            return {"probe": np.array([colour, *first, *other], dtype=np.int64)}

        arrays = cached(source, _tag("probe", name), build, enabled=self.plan.cache, extra={**extra,
                                                                                            "column": self.column})
        return np.asarray(arrays["probe"])

    def read(self, name: str) -> Split:
        split = self.plan.splits[name]
        source, extra = _source(split)
        rows = max(1, min(CHUNK_ROWS, CHUNK_BYTES // int(np.prod(self.in_shape))))
        resize = self.size is not None
        key = {**extra, "column": self.column, "chunk_rows": rows, **self.plan.target.key()}
        tag = _tag(f"{'x'.join(map(str, self.in_shape))}-{'bilinear' if resize else 'as-is'}", name)
        arrays = cached(source, tag, fill=lambda writer: self._fill(writer, name, rows), enabled=self.plan.cache,
                        extra=key)
        if name == "train":
            self.counts = np.asarray(arrays["counts"]).sum(0)
        return Split(*stored_split(arrays))

    def _fill(self, writer: Writer, name: str, rows: int) -> dict[str, np.ndarray]:
        """Every image of the split decoded into the store, chunk by chunk in threads (Pillow decodes and resizes
        without the GIL); each chunk's rows and its pixel histogram, then marked done once flushed."""
        split = self.plan.splits[name]
        y = _labels(self.plan, name)
        n, channels = len(split), self.in_shape[0]
        chunks = (n + rows - 1) // rows
        x = writer.create("x", (n, *self.in_shape), np.uint8)
        counts = writer.create("counts", (chunks, channels, 256), np.int64)
        todo = [k for k in range(chunks) if k not in writer.done]
        workers = max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                             16, len(todo)))
        flushed: list[int] = []
        pending: deque[tuple[int, Future]] = deque()

        def finish_one() -> None:
            k, future = pending.popleft()
            problem = future.result()
            if problem is not None:
                row, err = problem
                raise self._unreadable(name, row, err)
            flushed.append(k)
            advance(min(rows, n - k * rows))
            if len(flushed) * rows * int(np.prod(self.in_shape)) >= FLUSH_BYTES:
                _flush(writer, flushed, x, counts)

        raw = _raw(split, self.column)
        done_rows = sum(min(rows, n - k * rows) for k in writer.done)
        try:
            with ThreadPoolExecutor(workers) as pool, progress_bar(f"decode {name}", n, done_rows) as advance:
                try:
                    for k in todo:
                        start = k * rows
                        values = raw[start:start + rows][self.column]
                        pending.append((k, pool.submit(self._decode_chunk, values, start, k, x, counts)))
                        if len(pending) >= 2 * workers:  # bounded: encoded bytes of a few chunks at a time
                            finish_one()
                    while pending:
                        finish_one()
                finally:
                    for _, future in pending:
                        future.cancel()
        finally:  # after the threads stopped: the chunks decoded before a bad row or a Ctrl-C are kept, not redone
            _flush(writer, flushed, x, counts)
        return {"x": x, "counts": counts} if y is None else {"x": x, "counts": counts, "y": y}

    def _decode_chunk(self, values: list[Any], start: int, k: int, x: np.ndarray,
                      counts: np.ndarray) -> tuple[int, Exception] | None:
        channels = self.in_shape[0]
        for i, value in enumerate(values):
            try:
                pixels = _pixels(value, channels, self.size)
                if pixels.shape[1:] != tuple(self.in_shape[1:]):
                    found = "×".join(map(str, pixels.shape[1:]))
                    raise ValueError(f"it is {found} pixels, expected {self.in_shape[1]}×{self.in_shape[2]}")
            except Exception as err:  # noqa: BLE001 (every decoder fails its own way on a foreign file)
                return start + i, err
            x[start + i] = pixels
        block = x[start:start + len(values)]
        for c in range(channels):
            counts[k, c] = np.bincount(block[:, c].reshape(-1), minlength=256)
        return None

    def _unreadable(self, name: str, row: int, err: Exception) -> DataError:
        said = " ".join(str(err).split())[:200] or type(err).__name__
        return DataError(f"{WHO}: row {row} of the {name} split of data.path={self.plan.path} could not be read as an "
                         f"image (column {self.column}: {said}). Drop or replace that row (dataset.filter(...)) and "
                         f"save the data set again.")

    def stats(self, pool: Split, held: Split | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Each channel's mean and std of the pixels scaled to 0..1, from the histograms the decode counted (less the
        test rows held back): exact, as images.channel_stats computes them, without another pass over the store."""
        counts = self.counts.astype(np.float64) if self.counts is not None else _histograms(pool.x)
        if held is not None and self.counts is not None:
            counts = counts - _histograms(held.x)
        values = np.arange(256, dtype=np.float64) / self.scale
        total = np.maximum(1.0, counts.sum(1))
        mean = (counts * values).sum(1) / total
        var = np.maximum(0.0, (counts * values * values).sum(1) / total - mean * mean)
        return tuple(mean.tolist()), tuple(np.sqrt(var).tolist())


def _flush(writer: Writer, chunks: list[int], *arrays: np.ndarray) -> None:
    if chunks:
        for array in arrays:
            array.flush()
        writer.complete(*chunks)
        chunks.clear()


def _histograms(x: torch.Tensor) -> np.ndarray:
    """float64 C×256: each channel's count of every pixel value, a few thousand images at a time."""
    counts = np.zeros((x.shape[1], 256), dtype=np.float64)
    step = max(1, CHUNK_BYTES // max(1, x[:1].numel()))
    for start in range(0, len(x), step):
        block = x[start:start + step].numpy()
        for c in range(x.shape[1]):
            counts[c] += np.bincount(block[:, c].reshape(-1), minlength=256)
    return counts


def _raw(split: Any, column: str) -> Any:
    """The split's image column alone, undecoded: {"bytes", "path"} per row, for Pillow to decode here."""
    from datasets import Image

    return split.select_columns([column]).cast_column(column, Image(decode=False))


def _raw_chunks(split: Any, column: str, rows: int) -> Iterator[tuple[int, list[Any]]]:
    raw = _raw(split, column)
    for start in range(0, len(raw), rows):
        yield start, raw[start:start + rows][column]


def _opened(value: Any) -> Any:
    """A PIL image of one undecoded cell: its bytes, else its file."""
    from PIL import Image

    data = value.get("bytes") if isinstance(value, dict) else None
    path = value.get("path") if isinstance(value, dict) else None
    if data is not None:
        return Image.open(io.BytesIO(data))
    if path:
        return Image.open(path)
    raise ValueError("the cell is empty (null)")


def _has_colour(image: Any) -> int:
    """1 for RGB and the like, 0 for gray modes, and for a palette whether an entry it uses is not gray."""
    mode = image.mode
    if mode in ("P", "PA"):
        rgb = np.asarray(image.convert("RGB"))
        return int(bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any()))
    return int(not (mode in GRAY_MODES or mode.startswith("I;")))


def _pixels(value: Any, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """One cell as uint8 C×H×W, converted as image_folder converts files (16-bit gray keeps its high byte, colour
    with alpha lies on white, gray with alpha drops it), resized as it resizes them (Pillow, bilinear)."""
    from PIL import Image

    with _opened(value) as image:
        if image.mode.startswith("I;16"):
            image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
        if channels == 3 and (image.mode in ("RGBA", "PA", "RGBa") or (
                image.mode == "P" and "transparency" in image.info)):
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        image = image.convert("L" if channels == 1 else "RGB")
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.asarray(image)
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
