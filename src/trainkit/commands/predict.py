"""`trainkit predict ckpt=PATH input=PATH`: run a trained model on new data and write one CSV.

What `input=` can be follows from the shape of the model's samples, which the checkpoint carries:
- images: a CSV of pixel rows (Kaggle's MNIST test.csv, no label column) → a submission `ImageId,Label`, ids
  from 1 in input order; a folder of images, an index CSV of image files, or one image → `filename,` then the
  task's columns (a classifier's `label,confidence`); images are resized to the model's H×W when it was trained
  on resized images (data.size, e.g. data=image_folder), else they must have that size;
- vectors: a CSV of x values → the values, then the task's columns (a regression's `prediction`).

What a prediction is belongs to the task (`Task.predict`): raw values in, normalized as in training inside.
Images are decoded, and every input is run and written, in batches, with a progress bar on a terminal.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor

from trainkit.data.base import DataError, DataMeta
from trainkit.data.images import SUFFIXES as IMAGE_SUFFIXES
from trainkit.errors import ConfigError
from trainkit.logging.text import shown
from trainkit.reports.base import class_names
from trainkit.reports.inference import batches
from trainkit.restore import Restored, restore

DECODE_CHUNK = 4096  # image files decoded at a time: memory stays flat however many files there are


@dataclass
class Inputs:
    """What `input=` holds, read lazily: chunks of raw samples, each with its rows' leading CSV cells."""

    format: str  # "pixel_rows", "images" or "values"
    count: int
    header: list[str]  # the columns the input's rows start with
    chunks: Iterator[tuple[Tensor, list[list[str]]]]
    labels: Tensor | None = None  # a labeled pixel-row file's class indices: the accuracy is printed too


def run_predict(cfg: DictConfig, run_dir: Path, console: Console) -> dict[str, Any]:
    batch_size = int(cfg.batch_size)
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be at least 1.")
    restored = restore(cfg.ckpt, cfg)
    columns = _columns(restored)  # the task says no here, before any input is read, if it takes none
    inputs = _inputs(Path(str(cfg.input)).expanduser(), restored)
    default = "submission.csv" if inputs.format == "pixel_rows" else "predictions.csv"
    output = _output_path(cfg.get("output"), run_dir, default)
    predicted = _write(restored, inputs, columns, output, batch_size, console)
    result: dict[str, Any] = {"input": str(cfg.input), "kind": inputs.format, "rows": inputs.count, "output": str(output)}
    if inputs.labels is not None:
        names = class_names(restored.meta)
        expected = [names[k] for k in inputs.labels.tolist()]
        result["accuracy"] = sum(p == e for p, e in zip(predicted, expected)) / max(len(expected), 1)
        console.print(f"accuracy against the labels in {cfg.input}: {result['accuracy']:.2%}", highlight=False)
    plural = "" if inputs.count == 1 else "s"
    console.print(f"wrote {inputs.count} prediction{plural} to [bold]{shown(output)}[/bold]", highlight=False)
    return result


def _columns(restored: Restored) -> list[str]:
    """The task's output columns, asked of an empty batch."""
    empty = torch.zeros(0, *restored.meta.in_shape)
    with torch.inference_mode():
        return list(restored.task.predict(empty))


def _output_path(value: str | None, run_dir: Path, default: str) -> Path:
    if not value:
        return run_dir / default
    path = Path(str(value)).expanduser()
    if path.is_dir():
        path = path / default
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _inputs(path: Path, restored: Restored) -> Inputs:
    meta = restored.meta
    resize = _resizes(restored)
    if not path.exists():
        raise DataError(f"predict: input={path} does not exist. Set input= to {_expected(meta)}.")
    if len(meta.in_shape) != 3:
        return _values(path, meta)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"predict: the folder input={path} holds no image files ({', '.join(IMAGE_SUFFIXES)}). "
                            f"Set input= to {_expected(meta)}.")
        return _images(files, [p.relative_to(path).as_posix() for p in files], meta, resize)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _images([path], [path.name], meta, resize)
    if _pixel_row_reader(meta) is not None and _first_line_fields(path) >= math.prod(meta.in_shape):
        return _pixel_rows(path, meta)
    files, names = _index_csv(path, meta)
    return _images(files, names, meta, resize)


def _resizes(restored: Restored) -> bool:
    """Whether input images are resized to the model's H×W: when its training images were (data.size set), the
    same step makes new images what the model saw; otherwise a picture of another size is refused, not guessed at."""
    return OmegaConf.select(restored.recipe, "data.size", default=None) is not None


def _pixel_row_reader(meta: DataMeta) -> Any:
    """The reader of CSV files holding one image per row, for images of this shape (MNIST's 1×28×28), or None."""
    from trainkit.data import mnist_csv

    return mnist_csv.read_split if tuple(meta.in_shape) == tuple(mnist_csv.IN_SHAPE) else None


def _expected(meta: DataMeta) -> str:
    if len(meta.in_shape) != 3:
        return f"a CSV file of x values, {meta.in_shape[0]} per line (a header line is optional)"
    c, h, w = meta.in_shape
    rows = f"a CSV of pixel rows ({c * h * w} values per line, e.g. Kaggle's test.csv), " if _pixel_row_reader(meta) else ""
    return (f"{rows}a folder of {h}×{w} {'grayscale' if c == 1 else 'RGB'} images, an index CSV with a "
            f"filename column, or one image file")


def _first_line_fields(path: Path) -> int:
    with open(path, "rb") as f:
        return f.readline(1 << 16).count(b",") + 1


def _pixel_rows(path: Path, meta: DataMeta) -> Inputs:
    split = _pixel_row_reader(meta)(str(path), layout="auto", key="input", cache=False)  # one pass: no cache files
    x = split.x
    chunks = ((x[s:s + DECODE_CHUNK], [[str(i + 1)] for i in range(s, min(s + DECODE_CHUNK, len(x)))])
              for s in range(0, len(x), DECODE_CHUNK))
    return Inputs("pixel_rows", len(x), ["ImageId"], chunks, split.y)


def _images(files: list[Path], names: list[str], meta: DataMeta, resize: bool = False) -> Inputs:
    from trainkit.data.images import ImageError, read_images

    def chunks() -> Iterator[tuple[Tensor, list[list[str]]]]:
        for s in range(0, len(files), DECODE_CHUNK):
            try:
                x = read_images(files[s:s + DECODE_CHUNK], tuple(meta.in_shape), resize=resize)
            except ImageError as err:
                raise DataError(f"predict: {err}. This model takes {_expected_images(meta, resize)}; fix that "
                                f"file or leave it out.") from None
            yield x, [[name] for name in names[s:s + DECODE_CHUNK]]

    return Inputs("images", len(files), ["filename"], chunks())


def _expected_images(meta: DataMeta, resize: bool = False) -> str:
    c, h, w = meta.in_shape
    converted = "colours and sizes are converted" if resize else "colours are converted, sizes are not"
    return f"{h}×{w} {'grayscale' if c == 1 else 'RGB'} images ({converted})"


def _index_csv(path: Path, meta: DataMeta) -> tuple[list[Path], list[str]]:
    """An index CSV read by the training reader's own parser (data/index_csv.py): the files it names."""
    from trainkit.data.index_csv import Where, read_file_list

    try:
        return read_file_list(path, where=Where("predict", "input", dir_key=None))
    except DataError as err:
        if _pixel_row_reader(meta) is None:
            raise
        pixels = math.prod(meta.in_shape)
        raise DataError(f"{err} (a pixel CSV has {pixels} or {pixels + 1} fields per line)") from None


def _values(path: Path, meta: DataMeta) -> Inputs:
    """A CSV of floats, `meta.in_shape[0]` per line, with or without a header line."""
    features = meta.in_shape[0]
    if path.is_dir():
        raise DataError(f"predict: input={path} is a folder; a regression model reads a CSV file of x values, "
                        f"{features} per line.")
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
    x = torch.tensor(values, dtype=torch.float32)
    texts = [[cell.strip() for cell in row] for _, row in rows]
    return Inputs("values", len(x), header, iter([(x, texts)]))


def _as_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _write(restored: Restored, inputs: Inputs, columns: list[str], output: Path, batch_size: int,
           console: Console) -> list[Any]:
    """Run every chunk in batches and write its rows; returns the first output column's values (a classifier's
    labels). A pixel-row file becomes a submission: its ids and that first column, named `Label`."""
    submission = inputs.format == "pixel_rows"
    keep = columns[:1] if submission else columns
    first: list[Any] = []
    progress = Progress(TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)
    with open(output, "w", newline="") as f, progress, torch.inference_mode():
        writer = csv.writer(f)
        writer.writerow(inputs.header + (["Label"] if submission else keep))
        bar = progress.add_task("predict", total=inputs.count)
        for x, lead in inputs.chunks:
            done = 0
            for batch in batches(x, batch_size):
                with restored.autocast():
                    out = restored.task.predict(batch)
                rows = lead[done:done + len(batch)]
                done += len(batch)
                writer.writerows(row + [_cell(out[c][i]) for c in keep] for i, row in enumerate(rows))
                first.extend(out[columns[0]])
                progress.advance(bar, len(batch))
    return first


def _cell(value: Any) -> str:
    return f"{value:.9g}" if isinstance(value, float) else str(value)
