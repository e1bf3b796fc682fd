"""Reads an index CSV (`filename,label` or `id,label` rows; `id` means `<id>.png`) and the folder of images it names.

One parser for training (decoded once in parallel by data.images, and cached) and prediction (the file list).
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import torch

from trainkit.data.base import DataError, Split, regular_file
from trainkit.data.cache import Writer, cached, stored_split
from trainkit.data.images import ImageError, decode_into

# The file-name column of an index CSV, by its header (the first of these it has). `path`, `image_path` and `filepath` are there because
# `trainkit predict` took them before it shared this parser: one list, so a file that predicts also trains.
# No pixel CSV's header starts with any of these, so mnist_csv's layout=auto still tells the layouts apart.
NAME_COLUMNS = ("filename", "file", "path", "image", "image_path", "filepath", "id")
SUFFIX = ".png"  # added to a name without one, e.g. an `id`
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # what names an image


@dataclass(frozen=True)
class Index:
    """What the CSV says: image names as written, the file names they mean, their line numbers, and labels
    (None: an unlabeled index, or labels not asked for)."""

    written: list[str]
    names: list[str]  # file names: `<name>.png` for a name without a suffix
    lines: list[int]
    labels: np.ndarray | None


@dataclass(frozen=True)
class Where:
    """Who is reading, for messages: e.g. `mnist_csv` and the config keys that name the file and the folder."""

    who: str
    key: str  # e.g. data.train_csv
    dir_key: str | None = "data.images_dir"  # None: the caller has no setting for the images' folder


FILE_LIST = Where("index_csv", "input", dir_key=None)  # read_file_list's default: `trainkit predict input=...`


def is_index_header(names: list[str]) -> bool:
    return 0 < len(names) <= 2 and any(name in NAME_COLUMNS for name in names)


def _columns(header: list[str]) -> tuple[int, int | None]:
    """(the file-name column: the first of NAME_COLUMNS, in that order, that the header has; the label column:
    `label`, else the other one of two that is not a name column, else None)."""
    name = next(header.index(n) for n in NAME_COLUMNS if n in header)
    if "label" in header:
        return name, header.index("label")
    other = [i for i, n in enumerate(header) if i != name and n not in NAME_COLUMNS]
    return name, (other[0] if len(other) == 1 else None)


def names_image(cell: str) -> bool:
    """Whether a CSV cell is an image file name (by its suffix): how a headerless index shows itself."""
    return os.path.splitext(cell.strip())[1].lower() in IMAGE_SUFFIXES


def read_index(
    file: Path, in_shape: tuple[int, int, int], num_classes: int, where: Where,
    images_dir: str | None = None, cache: bool = True,
) -> Split:
    """x uint8 N×C×H×W and y int64 (or None) from the index `file`; `images_dir` None: found beside it."""
    index = _read_rows(file, where, num_classes)
    folder = _folder(file, index, images_dir, where)
    paths = [os.path.join(folder, name) for name in index.names]  # str, not Path: 60,000 of them add up
    stamp = _stat_all(file, paths, index, where)

    def fill(writer: Writer) -> dict[str, np.ndarray]:
        x = writer.create("x", (len(paths), *in_shape), np.uint8)
        try:  # decoded by worker processes straight into the store: memory does not grow with the images
            decode_into(writer.path("x"), [Path(p) for p in paths], in_shape, done=writer.done,
                        completed=lambda chunk, _: writer.complete(chunk), label=f"decode {file.name}")
        except ImageError as err:
            line = index.lines[err.index]
            raise DataError(
                f"{where.who}: {file} line {line} names {index.names[err.index]}: {err}. Replace that "
                f"image with a readable {in_shape[1]}×{in_shape[2]} picture, or remove the row."
            ) from None
        return {"x": x} if index.labels is None else {"x": x, "y": index.labels}

    tag = f"index-{'x'.join(map(str, in_shape))}"
    arrays = cached(file, tag, fill=fill, enabled=cache, extra={"images_dir": str(folder.absolute()), "images": stamp})
    x, y = stored_split(arrays)
    return Split(x, None if y is None else y.to(torch.int64))


def read_file_list(file: Path, *, where: Where = FILE_LIST) -> tuple[list[Path], list[str]]:
    """The image files an index CSV names, in its order, and the names as written: what `trainkit predict`
    runs on. The training reader's rules: a header that names a file column (the first of NAME_COLUMNS it has;
    a label column may be there, it is not read), a name without a suffix means `<name>.png`, relative names are found
    beside the CSV (., images/, Images/, ...; absolute ones where they are). One rule more: a file without a
    header whose first cell names an image (`0.png,7`) is a list too. Every file must exist; a DataError
    names the file, line and fix of the first that does not, and of every malformed row."""
    file = Path(file)
    index = _read_rows(file, where, num_classes=None, headerless=True)
    folder = _folder(file, index, None, where)
    paths = [os.path.join(folder, name) for name in index.names]
    _stat_all(file, paths, index, where)
    return [Path(p) for p in paths], index.written


def _read_rows(file: Path, where: Where, num_classes: int | None, headerless: bool = False) -> Index:
    """The one parser of index CSVs, for training (`read_index`) and prediction (`read_file_list`).

    `num_classes` None: a label column may be there but is not read. `headerless`: a first line that names an
    image is a row, not a header (training never gets here with one: mnist_csv asks for the header).
    """
    regular_file(file, f"{where.who}: {where.key}")
    with open(file, encoding="utf-8-sig", errors="replace", newline="") as f:
        rows = csv.reader(f)
        first = next((row for row in rows if any(cell.strip() for cell in row)), [])  # blank lines: skipped
        first_line = rows.line_num
        header, first_is_row = _header(file, first, first_line, where, headerless)
        numbered = chain([(first_line, first)] if first_is_row else [],
                         ((rows.line_num, row) for row in rows if any(cell.strip() for cell in row)))
        name_col, label_col = _columns(header)
        labeled = num_classes is not None and label_col is not None
        written, lines, labels = [], [], []
        for line, row in numbered:
            if len(row) != len(header):
                raise _bad_row(file, line, f"has {len(row)} fields, expected {len(header)} ({','.join(header)})",
                               where)
            name = row[name_col].strip()
            if not name.isprintable():  # a NUL or control byte: no file system has such a name
                raise _bad_row(file, line, f"column {name_col + 1} ({header[name_col]}) holds a control character "
                                           f"({name[:40]!r}), not an image file name", where)
            if not name:
                raise _bad_row(file, line, f"column {name_col + 1} ({header[name_col]}) is empty, expected an image "
                                           f"file name", where)
            written.append(name)
            lines.append(line)
            if labeled:
                labels.append(_label(row[label_col], file, line, num_classes, where, label_col))
    if not written:
        raise DataError(
            f"{where.who}: {file} has a header (line {first_line}: {','.join(header)}) but no rows naming images. "
            f"Set {where.key} to an index CSV with a row per image, e.g. 0.png,7."
        )
    names = [name if os.path.splitext(name)[1] else name + SUFFIX for name in written]
    return Index(written, names, lines, np.array(labels, dtype=np.uint8) if labeled else None)


def _header(file: Path, first: list[str], line: int, where: Where, headerless: bool) -> tuple[list[str], bool]:
    """(the column names, whether `first` is a row of data too): a header, or, `headerless`, an image name."""
    names = [cell.strip().lower() for cell in first]
    if is_index_header(names):
        return names, False
    if headerless and first and names_image(first[0]):
        return ["filename", "label"][:len(first)], True  # more fields than two: line 1 is a bad row
    found = "is empty" if not first else f"line {line} is {','.join(first)[:60]!r}, not the header of an index CSV"
    without = "; or no header and an image file name first on every line" if headerless else ""
    raise DataError(
        f"{where.who}: {file} {found}. An index CSV starts with a header that names a file column (one of "
        f"{', '.join(NAME_COLUMNS)}) and optionally a label column{without}. Add the header "
        f"filename,label (or filename alone) as its first line, or set {where.key} to an index CSV."
    )


def _label(cell: str, file: Path, line: int, num_classes: int, where: Where, column: int) -> int:
    text = cell.strip()
    if not (text.isascii() and text.isdigit() and int(text) < num_classes):
        found = "empty" if not text else repr(text)
        raise _bad_row(file, line, f"column {column + 1} (label) is {found}, expected a class label "
                                   f"0..{num_classes - 1}", where)
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
    if os.path.isabs(index.names[0]):
        return here  # joined with an absolute name, any folder gives the name itself
    candidates = [here, here / "images", here / "Images", here / "images" / file.stem, here / "Images" / file.stem,
                  here / file.stem]
    for folder in candidates:
        if (folder / index.names[0]).is_file():
            return folder
    looked = ", ".join(str(c) for c in candidates)
    fix = (f"Set {where.dir_key} to the folder of the images" if where.dir_key else
           f"Put the images beside {file.name} (or in images/ next to it), or write their names relative to "
           f"{here.absolute()}, or as absolute paths")
    raise DataError(
        f"{where.who}: {file} is an index CSV, but no folder beside it holds the image its line "
        f"{index.lines[0]} names, {index.names[0]} (looked in {looked}). {fix}."
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
