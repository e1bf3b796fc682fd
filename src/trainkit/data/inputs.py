"""New inputs for a trained model (`trainkit predict input=PATH`), read the way its dataset says.

A dataset may register a reader of new inputs (`register_dataset(name, load, inputs=Reader)`); a dataset without one
gets `default_reader`: images where its samples are C×H×W (a folder of images, one image file, or an index CSV of
image files), else a CSV of values, one sample per line. A reader is a class constructed as `Reader(meta, data)`
(`data`: the checkpoint's `data.*` keys) with `expected()` (what `input=` may be, for messages) and `read(path)`, which
returns `Inputs`: raw samples as stored on disk, decoded in chunks, each with the leading CSV cells of its row. These
readers hold the chunk at hand and a name per image file, no more, so a folder or a CSV of any size runs in the same
memory.
"""

from __future__ import annotations

import csv
import itertools
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
DECODE_BYTES = 256 << 20  # and at most this many bytes of pixels: 1,783 images of 3×224×224, not 4096 (616 MB)
VALUE_CHUNK = 4096  # CSV lines of values parsed at a time


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
        step = max(1, min(DECODE_CHUNK, DECODE_BYTES // math.prod(shape)))

        def chunks() -> Iterator[tuple[Tensor, list[list[str]]]]:
            for s in range(0, len(files), step):
                part = files[s:s + step]
                try:
                    x = read_images(part, shape, resize=self.resize)
                except ImageError as err:
                    if err.index > 0:  # the files before it are predicted (and written) before the error is said
                        yield self._decoded(part[:err.index]), [[name] for name in names[s:s + err.index]]
                    raise self._refusal(err) from None
                yield x, [[name] for name in names[s:s + step]]

        return Inputs("images", len(files), ["filename"], chunks())

    def _decoded(self, files: list[Path]) -> Tensor:
        from trainkit.data.images import ImageError, read_images

        try:
            return read_images(files, tuple(self.meta.in_shape), resize=self.resize)
        except ImageError as err:  # changed since it was read a moment ago
            raise self._refusal(err) from None

    def _refusal(self, err: Exception) -> DataError:
        said = " ".join(str(err).split())  # one paragraph, whatever the decoder said across lines
        return DataError(f"predict: {said}. This model takes {self._images()}; fix that file or leave it out.")

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
        """Every line is checked first (so a bad one is said before anything is written), counting the samples; the
        file is then read again, a chunk of lines at a time, as the predictions are written."""
        features = self.features
        if path.is_dir():
            raise DataError(f"predict: input={path} is a folder; this model reads a CSV file of x values, "
                            f"{features} per line.")
        regular_file(path, "predict: input")
        lines = self._lines(path)
        first = next(lines, None)
        if first is None:
            raise DataError(f"predict: input={path} is empty; expected x values, {features} per line.")
        header = [cell.strip() for cell in first[1]]
        named = not all(_as_float(cell) is not None for cell in header)
        count = 0
        for number, row in lines if named else itertools.chain([first], lines):
            self._values(path, number, row)
            count += 1
        if not named:
            header = ["x"] if features == 1 else [f"x{i}" for i in range(features)]
        if len(header) != features:
            raise DataError(f"predict: input={path} has a header of {len(header)} names; the model takes {features} "
                            f"x value{'s' if features > 1 else ''} per line.")
        return Inputs("values", count, header, self._chunks(path, named))

    def _chunks(self, path: Path, named: bool) -> Iterator[tuple[Tensor, list[list[str]]]]:
        lines = self._lines(path)
        if named:
            next(lines, None)
        # One list a line is all that a chunk keeps (its cells, stripped in place, are the rows' leading cells): what
        # a chunk keeps, Python's full garbage collections walk again and again; with four objects a line they took
        # 40% of the time.
        values: list[float] = []
        texts: list[list[str]] = []
        for number, row in lines:
            values += self._values(path, number, row)
            row[:] = [cell.strip() for cell in row]
            texts.append(row)
            if len(texts) == VALUE_CHUNK:
                yield self._tensor(values, len(texts)), texts
                values, texts = [], []
        if texts:
            yield self._tensor(values, len(texts)), texts

    def _tensor(self, values: list[float], n: int) -> Tensor:
        return torch.tensor(values, dtype=torch.float32).reshape(n, *self.meta.in_shape)

    @staticmethod
    def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
        """(line number, cells) of each line that is not blank."""
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            for number, row in enumerate(csv.reader(f), start=1):
                if "".join(row).strip():  # any(cell.strip() ...), at C speed: this runs once a line, twice a file
                    yield number, row

    def _values(self, path: Path, number: int, row: list[str]) -> list[float]:
        features = self.features
        try:
            floats = [float(cell) for cell in row]  # _as_float's test, a row at a time
        except ValueError:
            floats = []
        if len(row) != features or len(floats) != features or not all(map(math.isfinite, floats)):
            raise DataError(f"predict: input={path} line {number} is {','.join(row)[:80]!r}; expected "
                            f"{features} number{'s' if features > 1 else ''} per line. Fix or remove that line.")
        return floats


def _as_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
