"""Reads torchvision's ImageFolder layout (one folder of images per class) into a sample store, decoded once.

`root/train/<class>/...` with optional `root/val/` and `root/test/` beside it, or `root/<class>/...` carved into
train, val and test. Files are listed as torchvision lists them (classes sorted, then each class's files) and
decoded by worker processes straight into a memory-mapped store (data/cache.py), so a folder of any size decodes
and trains in constant memory; an interrupted decode continues where it stopped. An unreadable image stops the read,
or is skipped and counted (data.on_bad_image). The batch loader normalizes and batches.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

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
    regular_file,
)
from trainkit.data.cache import Writer, cached, stored_split
from trainkit.data.images import SUFFIXES, ImageError, channel_stats, decode_into, probe_images, read_images
from trainkit.data.inputs import ImageInputs
from trainkit.data.normalization import normalization
from trainkit.storage import cache_root

WHO = "image_folder"


@dataclass(frozen=True)
class Listing:
    """The image files of one folder of class folders, in torchvision's order, with their class indices."""

    folder: Path
    files: list[Path]
    labels: np.ndarray  # int64, one per file

    @functools.cached_property
    def stamp(self) -> str:
        """Every file's name, class, size and mtime: a changed, added or removed image changes it. Made once per
        listing (the probe's store and the decode's are both keyed by it)."""
        return "".join(f"{file.relative_to(self.folder).as_posix()}\t{label}\t{stat.st_size}\t{stat.st_mtime_ns}\n"
                       for file, label in zip(self.files, self.labels.tolist()) for stat in (file.stat(),))


def load(
    root: str,  # the folder of class folders, or the one that holds train/ (and val/, test/)
    size: list[int] | None = None,  # [H, W]: resize every image to this; null: all images must share one size
    val_fraction: float = 0.1,  # of the training images, held back for validation (unless root/val/ exists)
    test_fraction: float = 0.0,  # > 0: hold back this much of the training images as test (no root/test/)
    seed: int = 0,  # of the carves
    normalize: bool = True,  # false: pixels are only scaled to 0..1
    mean: list[float] | None = None,  # per channel, of pixels scaled to 0..1; null: computed from the train images
    std: list[float] | None = None,
    cache: bool = True,  # keep decoded images as .npy in ~/.cache/trainkit (not among the class folders)
    on_bad_image: str = "error",  # an unreadable image: "error" names it and stops, "skip" leaves it out and counts it
    *,
    splits: tuple[str, ...] = SPLITS,  # which to return; not a config key: the command knows what it needs
) -> DataSplits:
    """Train from root/train/ (or root itself), val from root/val/ or carved from train, test from root/test/,
    carved from train with data.test_fraction, or None. The normalization, unless given, is the training
    images' own (before the validation carve), so the metadata is the same whichever splits are asked for."""
    asked = asked_splits(splits, WHO)
    height_width = _size(size)
    check_fractions(WHO, val_fraction, test_fraction)
    skip = _on_bad_image(on_bad_image)
    folders = _layout(Path(root).expanduser(), test_fraction)
    classes = _classes(folders)
    listings = {name: _list_files(folder, classes) for name, folder in folders.items()}
    in_shape = _in_shape(listings, height_width, cache, skip)
    skipped: list[str] = []

    def read(name: str) -> Split:
        split, bad = _decode(listings[name], in_shape, height_width is not None, cache, skip)
        skipped.extend(bad)
        return split

    stats = mean is None and std is None and normalize
    train = val = test = pool = None
    if asked & {"train", "val"} or stats or ("test" in asked and test_fraction > 0):
        pool = read("train")  # then less any test hold-back: what train and val are carved from, and stats read
        if test_fraction > 0:  # also when test is not asked for: train must be what a full load leaves
            pool, test = _carve(pool, test_fraction, seed, "data.test_fraction")
        train = pool
        if "val" not in folders and asked & {"train", "val"}:
            train, val = _carve(pool, val_fraction, seed, "data.val_fraction")
    if "val" in folders and "val" in asked:
        val = read("val")
    if "test" in folders and "test" in asked:
        test = read("test")
    if not normalize:
        mean, std = None, None
    elif stats:
        mean, std = channel_stats(pool.x)
    mean, std = normalization(mean, std, in_shape[0], WHO)
    meta = DataMeta(
        name=WHO, kind="classification", in_shape=in_shape, num_outputs=len(classes), class_names=classes,
        scale=255.0, mean=mean, std=std, target_shape=(),
    )
    data = DataSplits.asked(asked, train, val, test, meta)
    if skipped:
        shown = "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        data.warnings.append(f"{WHO}: skipped {len(skipped)} unreadable image{'s' if len(skipped) > 1 else ''} "
                             f"(data.on_bad_image=skip): {shown}")
    return data


def find_problems(root: str, size: list[int] | None = None, test_fraction: float = 0.0, **_: object) -> list[str]:
    """Every problem of the folder, not only the first: each empty class folder, stray file, unreadable image,
    and the mismatches between train/, val/ and test/, for `trainkit data check`."""
    problems: list[str] = []
    try:
        folders = _layout(Path(root).expanduser(), test_fraction)
        classes = _classes(folders)
    except DataError as err:
        return [str(err)]
    for folder in folders.values():
        try:
            listing = _list_files(folder, classes, problems)
        except DataError as err:
            problems.append(str(err))
            continue
        problems += _unreadable(listing.files)
    return problems


def _size(size: list[int] | None) -> tuple[int, int] | None:
    return image_size(size, WHO)


def _carve(split: Split, fraction: float, seed: int, key: str) -> tuple[Split, Split]:
    return carve_for(WHO, split, fraction, seed, key)


def _visible_dirs(folder: Path) -> list[str]:
    """Sub-folder names, sorted as torchvision sorts classes; hidden ones (.ipynb_checkpoints, .tkcache) left out."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _layout(root: Path, test_fraction: float) -> dict[str, Path]:
    """{split: its folder of class folders}: train/ (val/, test/) when root holds a train/ of class folders,
    else {"train": root}."""
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(
            f"{WHO}: data.root={root} {what} (resolved to {root.absolute()}). Set data.root to a folder with one "
            f"folder of images per class (root/cat/1.png, root/dog/2.png), or one that holds train/ and test/ "
            f"folders laid out so."
        )
    if (root / "train").is_dir() and _visible_dirs(root / "train"):
        folders = {name: root / name for name in SPLITS if (root / name).is_dir()}
        if "test" in folders and test_fraction > 0:
            raise DataError(
                f"{WHO}: {root} has a test/ folder and data.test_fraction={test_fraction} asks to carve test images "
                f"from train/ as well. Set data.test_fraction=0 to test on test/, or remove test/."
            )
        return folders
    if not _visible_dirs(root):
        found = sorted(p.name for p in root.iterdir())[:5]
        holds = f"it holds {', '.join(found)}" if found else "it is empty"
        raise DataError(
            f"{WHO}: data.root={root} holds no class folders ({holds}). Put each class's images in a folder named "
            f"after the class (root/cat/1.png, root/dog/2.png), or train/ and test/ folders laid out so."
        )
    return {"train": root}


def _classes(folders: dict[str, Path]) -> list[str]:
    """The class folder names of train/, checked against val/ and test/: a class index must mean one class."""
    classes = _visible_dirs(folders["train"])
    for name, folder in folders.items():
        theirs = _visible_dirs(folder)
        if theirs != classes:
            only_train = sorted(set(classes) - set(theirs))
            only_theirs = sorted(set(theirs) - set(classes))
            parts = ([f"only train/ has {', '.join(only_train)}"] if only_train else []) + (
                [f"only {name}/ has {', '.join(only_theirs)}"] if only_theirs else [])
            raise DataError(
                f"{WHO}: {folders['train']} and {folder} hold different class folders ({'; '.join(parts)}). "
                f"Each class index must mean the same class in every split: give {name}/ the same class folders "
                f"as train/ (an empty class has no place in either)."
            )
    return classes


def _list_files(folder: Path, classes: list[str], problems: list[str] | None = None) -> Listing:
    """Each class's image files in torchvision's ImageFolder order (os.walk sorted, then file names sorted).
    A stray file (not an image by its suffix) or an empty class is an error, or, given `problems`, listed there."""
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        found = 0
        for top, dirs, names in sorted(os.walk(folder / name, followlinks=True)):
            if any(part.startswith(".") for part in Path(top).relative_to(folder).parts):
                continue  # a hidden folder inside a class
            for file_name in sorted(names):
                path = Path(top) / file_name
                if file_name.startswith("."):
                    continue  # .DS_Store and the like
                problem = None
                if os.path.splitext(file_name)[1].lower() not in SUFFIXES:
                    problem = (f"{WHO}: {path} is not an image file (by its suffix; images are "
                               f"{', '.join(SUFFIXES)}). Move it out of the class folder {folder / name}.")
                else:
                    try:  # a dangling link or a FIFO: the listing would fail on it, a decoder block on it
                        regular_file(path, WHO)
                    except DataError as err:
                        problem = str(err).replace(" Give a file.", " Remove it from the class folder.")
                if problem is not None:
                    if problems is None:
                        raise DataError(problem)
                    problems.append(problem)
                    continue
                files.append(path)
                labels.append(index)
                found += 1
        if not found:
            problem = (f"{WHO}: the class folder {folder / name} holds no images. Put the class's images there "
                       f"(suffixes {', '.join(SUFFIXES)}), or remove the folder.")
            if problems is None:
                raise DataError(problem)
            problems.append(problem)
    return Listing(folder, files, np.array(labels, dtype=np.int64))


def _on_bad_image(value: str) -> bool:
    if value not in ("error", "skip"):
        raise DataError(f"{WHO}: data.on_bad_image={value!r} is not one of error, skip. Set data.on_bad_image=error to "
                        f"stop at an unreadable image and name it, or data.on_bad_image=skip to leave such images out "
                        f"(counted in the run's summary).")
    return value == "skip"


def _in_shape(listings: dict[str, Listing], size: tuple[int, int] | None, cache: bool,
              skip: bool) -> tuple[int, int, int]:
    """C×H×W of every split: 3 channels if any image has colour, else 1; H×W from data.size, or the one size
    that every image shares (of the images that can be read, when they are skipped)."""
    probes = {name: _probe(listing, cache, skip) for name, listing in listings.items()}
    files = [f for listing in listings.values() for f in listing.files]
    rows = np.concatenate(list(probes.values()))
    readable = np.flatnonzero(rows[:, 0] >= 0)
    if not readable.size:
        raise DataError(f"{WHO}: none of the {len(files)} image files can be read ({files[0]} is the first). Check "
                        f"that data.root={listings['train'].folder} holds pictures.")
    channels = 3 if rows[readable, 2].any() else 1
    if size is not None:
        return channels, *size
    hw = rows[readable, :2]
    other = np.flatnonzero((hw != hw[0]).any(axis=1))
    if other.size:
        first, k = files[int(readable[0])], files[int(readable[other[0]])]
        raise DataError(
            f"{WHO}: the images are not all of one size: {first} is {hw[0, 0]}×{hw[0, 1]} (H×W) and {k} "
            f"is {hw[other[0], 0]}×{hw[other[0], 1]}. Set data.size=[H,W] to resize every image to one size, e.g. "
            f"data.size=[{hw[0, 0]},{hw[0, 1]}]."
        )
    return channels, int(hw[0, 0]), int(hw[0, 1])


def _probe(listing: Listing, cache: bool, skip: bool) -> np.ndarray:
    """Each file's height, width and colour (data.images.probe_images); -1 rows for files that cannot be read,
    which is an error naming the file unless they are skipped."""
    def build() -> dict[str, np.ndarray]:
        try:
            return {"probe": probe_images(listing.files, skip=[])}
        except ImageError as err:
            raise DataError(f"{WHO}: {err}. Replace or remove that file.") from None

    rows = np.asarray(_cached(listing, "probe", build, cache)["probe"])
    bad = np.flatnonzero(rows[:, 0] < 0)
    if bad.size and not skip:
        try:  # the file again, for what exactly is wrong with it
            probe_images([listing.files[int(bad[0])]])
        except ImageError as err:
            raise DataError(f"{WHO}: {err}. Replace or remove that file, or set data.on_bad_image=skip to leave "
                            f"unreadable images out.") from None
    return rows


def _decode(listing: Listing, in_shape: tuple[int, int, int], resize: bool, cache: bool,
            skip: bool) -> tuple[Split, list[str]]:
    """The listing's images in a store (decoded by worker processes straight into its file), and what was skipped:
    one line per unreadable file. A store made while skipping still refuses them when they are not to be skipped."""
    def fill(writer: Writer) -> dict[str, np.ndarray]:
        n = len(listing.files)
        x = writer.create("x", (n, *in_shape), np.uint8)
        bad = writer.create("bad", (n,), np.uint8)  # 1: the file could not be decoded, its row is zeros

        def completed(chunk: int, problems: list[tuple[int, str]]) -> None:
            for index, _ in problems:
                bad[index] = 1
            bad.flush()
            writer.complete(chunk)

        try:
            decode_into(writer.path("x"), listing.files, in_shape, resize=resize, done=writer.done,
                        completed=completed, skip=skip, label=f"decode {listing.folder.name}")
        except ImageError as err:
            raise DataError(f"{WHO}: {err}. Replace or remove that file, or set data.on_bad_image=skip to leave "
                            f"unreadable images out.") from None
        skipped = np.flatnonzero(np.asarray(bad))
        if not skipped.size:
            return {"x": x, "y": listing.labels, "skipped": skipped}
        keep = np.setdiff1d(np.arange(n), skipped)
        kept = writer.create("x_kept", (len(keep), *in_shape), np.uint8)
        step = max(1, (16 << 20) // max(1, int(np.prod(in_shape))))
        for start in range(0, len(keep), step):
            kept[start:start + step] = x[keep[start:start + step]]
        return {"x": kept, "y": listing.labels[keep], "skipped": skipped}

    tag = f"decoded-{'x'.join(map(str, in_shape))}-{'bilinear' if resize else 'as-is'}"  # what data.images did
    arrays = _cached(listing, tag, None, cache, fill=fill)
    skipped = [f"{listing.files[int(i)]}" for i in np.asarray(arrays.get("skipped", np.zeros(0, np.int64)))]
    if skipped and not skip:
        try:
            read_images([Path(skipped[0])], in_shape, resize=resize)
        except ImageError as err:
            raise DataError(f"{WHO}: {err}. Replace or remove that file, or set data.on_bad_image=skip to leave "
                            f"unreadable images out.") from None
    x, y = stored_split(arrays)
    return Split(x, y.to(torch.int64)), skipped


def _cached(listing: Listing, tag: str, build, enabled: bool, fill=None) -> dict[str, np.ndarray]:
    """data.cache's arrays, keyed by a listing file that names every image with its size and mtime.

    The listing lives in the user cache dir, not in the data folder: a .tkcache folder among the class folders
    would be one more class to torchvision's ImageFolder. It is rewritten only when an image changed, so its
    own fingerprint (size, mtime) says whether the cached arrays still describe the folder."""
    if not enabled:
        return cached(Path("."), tag, build, fill=fill, enabled=False)
    stamp = listing.stamp
    folder = listing.folder.absolute()
    where = hashlib.blake2b(str(folder).encode(), digest_size=8).hexdigest()
    source = cache_root() / WHO / where / f"{folder.name}.listing"
    try:
        if not source.is_file() or source.read_text() != stamp:
            source.parent.mkdir(parents=True, exist_ok=True)
            temp = source.with_name(f".{source.name}.{os.getpid()}")
            temp.write_text(stamp)
            os.replace(temp, source)
    except OSError:  # no writable cache dir: decode every time
        return cached(Path("."), tag, build, fill=fill, enabled=False)
    digest = hashlib.blake2b(stamp.encode(), digest_size=16).hexdigest()
    return cached(source, tag, build, fill=fill, extra={"folder": str(folder), "listing": digest})


def _unreadable(files: list[Path]) -> list[str]:
    """One line per file that is not an image, for find_problems."""
    problems: list[tuple[int, str]] = []
    probe_images(files, skip=problems)
    return [f"{WHO}: {message}. Replace or remove that file." for _, message in problems]


class FolderInputs(ImageInputs):
    """New inputs for a model trained on an image folder (`trainkit predict`): as for any image data, but where its
    training images were resized (data.size), new ones are resized the same way, so they are what the model saw."""

    def __init__(self, meta: DataMeta, data: dict) -> None:
        super().__init__(meta, data)
        self.resize = data.get("size") is not None
