"""New inputs for a trained model (`trainkit predict input=PATH`), read the way its dataset says.

A dataset may register a reader of new inputs (`register_dataset(name, load, inputs=Reader)`); a dataset without one
gets `default_reader`: images where its samples are C×H×W (a folder of images, one image file, or an index CSV of
image files), else a CSV of values, one sample per line. A reader is a class constructed as `Reader(meta, data)`
(`data`: the checkpoint's `data.*` keys) with `expected()` (what `input=` may be, for messages) and `read(path)`, which
returns `Inputs`: raw samples as stored on disk, decoded in chunks, each with the leading CSV cells of its row.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from trainkit.data.base import DataError, DataMeta, regular_file
from trainkit.data.images import SUFFIXES as IMAGE_SUFFIXES

DECODE_CHUNK = 4096  # image files decoded at a time: memory stays flat however many files there are


@dataclass
class Inputs:
    """What `input=` holds, read lazily: chunks of raw samples, each with its rows' leading CSV cells."""

    format: str  # e.g. "images", "values", "pixel_rows": for the result and messages
    count: int
    header: list[str]  # the columns the input's rows start with
    chunks: Iterator[tuple[Tensor, list[list[str]]]]
    labels: Tensor | None = None  # targets the inputs carry (a labelled file): predict also scores the predictions
    output: str = "predictions.csv"  # the file's default name in the run directory
    # A submission (Kaggle's ImageId,Label): each row's leading cells and only the prediction, under this header.
    submission: str | None = None


class InputReader(Protocol):
    def __init__(self, meta: DataMeta, data: dict[str, Any]) -> None: ...

    def expected(self) -> str:
        """What `input=` may be, e.g. "a folder of 28×28 grayscale images, ..." (used in every refusal)."""

    def read(self, path: Path) -> Inputs:
        """The inputs at `path` (it exists), or a DataError naming the file, the line and the fix."""


def default_reader(meta: DataMeta) -> type:
    """Images for C×H×W samples, else CSV rows of values."""
    return ImageInputs if len(meta.in_shape) == 3 else ValueInputs


class ImageInputs:
    """Image files: a folder of them (searched recursively), one file, or an index CSV with a filename column.
    Each row of the output starts with the file's name. Images are converted to the model's colours; their size must
    be the model's unless `resize` (a dataset whose training images were resized)."""

    resize = False

    def __init__(self, meta: DataMeta, data: dict[str, Any]) -> None:
        self.meta, self.data = meta, data

    def expected(self) -> str:
        c, h, w = self.meta.in_shape
        return (f"a folder of {h}×{w} {'grayscale' if c == 1 else 'RGB'} images, an index CSV with a filename "
                f"column, or one image file")

    def read(self, path: Path) -> Inputs:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
            for file in files:  # a dangling link or a FIFO among them: said, not skipped, not blocked on
                regular_file(file, "predict: input")
            if not files:
                raise DataError(f"predict: the folder input={path} holds no image files ({', '.join(IMAGE_SUFFIXES)}). "
                                f"Set input= to {self.expected()}.")
            return self.images(files, [p.relative_to(path).as_posix() for p in files])
        regular_file(path, "predict: input")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return self.images([path], [path.name])
        files, names = self.index_csv(path)
        return self.images(files, names)

    def index_csv(self, path: Path) -> tuple[list[Path], list[str]]:
        """An index CSV read by the training reader's own parser (data/index_csv.py): the files it names."""
        from trainkit.data.index_csv import Where, read_file_list

        return read_file_list(path, where=Where("predict", "input", dir_key=None))

    def images(self, files: list[Path], names: list[str]) -> Inputs:
        from trainkit.data.images import ImageError, read_images

        shape = tuple(self.meta.in_shape)

        def chunks() -> Iterator[tuple[Tensor, list[list[str]]]]:
            for s in range(0, len(files), DECODE_CHUNK):
                try:
                    x = read_images(files[s:s + DECODE_CHUNK], shape, resize=self.resize)
                except ImageError as err:
                    raise DataError(f"predict: {err}. This model takes {self._images()}; fix that file or leave it "
                                    f"out.") from None
                yield x, [[name] for name in names[s:s + DECODE_CHUNK]]

        return Inputs("images", len(files), ["filename"], chunks())

    def _images(self) -> str:
        c, h, w = self.meta.in_shape
        converted = "colours and sizes are converted" if self.resize else "colours are converted, sizes are not"
        return f"{h}×{w} {'grayscale' if c == 1 else 'RGB'} images ({converted})"


class ValueInputs:
    """A CSV of numbers, `in_shape[0]` per line (one sample each), with or without a header line; each output row
    starts with the sample's values."""

    def __init__(self, meta: DataMeta, data: dict[str, Any]) -> None:
        self.meta, self.data = meta, data
        self.features = math.prod(meta.in_shape)

    def expected(self) -> str:
        return f"a CSV file of x values, {self.features} per line (a header line is optional)"

    def read(self, path: Path) -> Inputs:
        features = self.features
        if path.is_dir():
            raise DataError(f"predict: input={path} is a folder; this model reads a CSV file of x values, "
                            f"{features} per line.")
        regular_file(path, "predict: input")
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            rows = [(n, row) for n, row in enumerate(csv.reader(f), start=1) if any(cell.strip() for cell in row)]
        if not rows:
            raise DataError(f"predict: input={path} is empty; expected x values, {features} per line.")
        header = [cell.strip() for cell in rows[0][1]]
        if all(_as_float(cell) is not None for cell in header):
            header = ["x"] if features == 1 else [f"x{i}" for i in range(features)]
        else:
            rows = rows[1:]
        values = []
        for number, row in rows:
            floats = [_as_float(cell) for cell in row]
            if len(row) != features or any(v is None for v in floats):
                raise DataError(f"predict: input={path} line {number} is {','.join(row)[:80]!r}; expected "
                                f"{features} number{'s' if features > 1 else ''} per line. Fix or remove that line.")
            values.append(floats)
        if len(header) != features:
            raise DataError(f"predict: input={path} has a header of {len(header)} names; the model takes {features} "
                            f"x value{'s' if features > 1 else ''} per line.")
        x = torch.tensor(values, dtype=torch.float32).reshape(len(values), *self.meta.in_shape)
        texts = [[cell.strip() for cell in row] for _, row in rows]
        return Inputs("values", len(x), header, iter([(x, texts)]))


def _as_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
