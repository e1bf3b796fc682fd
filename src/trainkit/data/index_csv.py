"""Reads an index CSV (`filename,label` or `id,label` rows; `id` means `<id>.png`) and the folder of images it names.

It finds the folder, checks every row and file, decodes once in parallel (data.images) and caches the result.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainkit.data.base import DataError, Split
from trainkit.data.cache import cached
from trainkit.data.images import ImageError, read_images

NAME_COLUMNS = ("filename", "file", "image", "id")  # the first column of an index CSV, by its header
SUFFIX = ".png"  # added to a name without one, e.g. an `id`


@dataclass(frozen=True)
class Index:
    """What the CSV says: image names, their line numbers and labels (None: an unlabeled index)."""

    names: list[str]
    lines: list[int]
    labels: np.ndarray | None


@dataclass(frozen=True)
class Where:
    """Who is reading, for messages: `mnist_csv` and the config keys that name the file and the folder."""

    who: str
    key: str  # e.g. data.train_csv
    dir_key: str = "data.images_dir"


def is_index_header(names: list[str]) -> bool:
    return bool(names) and names[0] in NAME_COLUMNS and len(names) <= 2


def read_index(
    file: Path, in_shape: tuple[int, int, int], num_classes: int, where: Where,
    images_dir: str | None = None, cache: bool = True,
) -> Split:
    """x uint8 N×C×H×W and y int64 (or None) from the index `file`; `images_dir` None: found beside it."""
    index = _read_rows(file, num_classes, where)
    folder = _folder(file, index, images_dir, where)
    paths = [os.path.join(folder, name) for name in index.names]  # str, not Path: 60,000 of them add up
    stamp = _stat_all(file, paths, index, where)

    def decode() -> dict[str, np.ndarray]:
        try:
            x = read_images([Path(p) for p in paths], in_shape).numpy()
        except ImageError as err:
            line = index.lines[err.index]
            raise DataError(
                f"{where.who}: {file} line {line} names {index.names[err.index]}: {err}. Replace that "
                f"image with a readable {in_shape[1]}×{in_shape[2]} picture, or remove the row."
            ) from None
        return {"x": x} if index.labels is None else {"x": x, "y": index.labels}

    tag = f"index-{'x'.join(map(str, in_shape))}"
    arrays = cached(file, tag, decode, enabled=cache, extra={"images_dir": str(folder.absolute()), "images": stamp})
    y = None if index.labels is None else torch.from_numpy(np.asarray(arrays["y"], dtype=np.int64))
    return Split(torch.from_numpy(arrays["x"]), y)


def _read_rows(file: Path, num_classes: int, where: Where) -> Index:
    with open(file, encoding="utf-8-sig", errors="replace", newline="") as f:
        rows = csv.reader(f)
        header = [n.strip().lower() for n in next(rows, [])]
        names, lines, labels = [], [], []
        for row in rows:
            if not any(cell.strip() for cell in row):
                continue  # blank line
            line = rows.line_num
            if len(row) != len(header):
                raise _bad_row(file, line, f"has {len(row)} fields, expected {len(header)} ({','.join(header)})",
                               where)
            name = row[0].strip()
            if not name:
                raise _bad_row(file, line, f"column 1 ({header[0]}) is empty, expected an image file name", where)
            names.append(name if os.path.splitext(name)[1] else name + SUFFIX)
            lines.append(line)
            if len(header) == 2:
                labels.append(_label(row[1], file, line, num_classes, where))
    if not names:
        raise DataError(
            f"{where.who}: {file} has a header (line 1: {','.join(header)}) but no rows naming images. "
            f"Set {where.key} to an index CSV with a row per image, e.g. 0.png,7."
        )
    return Index(names, lines, np.array(labels, dtype=np.uint8) if len(header) == 2 else None)


def _label(cell: str, file: Path, line: int, num_classes: int, where: Where) -> int:
    text = cell.strip()
    if not (text.isascii() and text.isdigit() and int(text) < num_classes):
        found = "empty" if not text else repr(text)
        raise _bad_row(file, line, f"column 2 (label) is {found}, expected a class label 0..{num_classes - 1}",
                       where)
    return int(text)


def _bad_row(file: Path, line: int, problem: str, where: Where) -> DataError:
    return DataError(
        f"{where.who}: {file} line {line} {problem} (an index CSV: a header filename,label or id,label, then "
        f"one image file name and its label per row). Fix or remove that row."
    )


def _folder(file: Path, index: Index, images_dir: str | None, where: Where) -> Path:
    """The folder that holds the images: `images_dir`, or the first place beside the CSV holding the first one."""
    if images_dir is not None:
        folder = Path(images_dir).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"{where.who}: {where.dir_key}={images_dir} is not a folder (resolved to {folder.absolute()}). "
                f"Set {where.dir_key} to the folder that holds the images {file.name} names, or to null to "
                f"look beside {file.name}."
            )
        return folder
    here = file.parent
    candidates = [here, here / "images", here / "Images", here / "images" / file.stem, here / "Images" / file.stem,
                  here / file.stem]
    for folder in candidates:
        if (folder / index.names[0]).is_file():
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"{where.who}: {file} is an index CSV, but no folder beside it holds the image its line "
        f"{index.lines[0]} names, {index.names[0]} (looked in {looked}). Set {where.dir_key} to the folder "
        f"of the images."
    )


def _stat_all(file: Path, paths: list[str], index: Index, where: Where) -> str:
    """A digest of every image's size and mtime (part of the cache key); a missing file is named here."""
    stamps = np.empty((len(paths), 2), dtype=np.int64)
    for i, path in enumerate(paths):
        try:
            stat = os.stat(path)
        except OSError:
            raise DataError(
                f"{where.who}: {file} line {index.lines[i]} names {index.names[i]}, which is not in "
                f"{os.path.dirname(path)} ({path} does not exist). Put the image there, fix the name, or remove "
                f"the row."
            ) from None
        stamps[i] = stat.st_size, stat.st_mtime_ns
    return hashlib.blake2b(stamps.tobytes(), digest_size=16).hexdigest()
