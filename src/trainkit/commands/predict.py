"""`trainkit predict ckpt=PATH input=PATH`: run a trained model on new data and write one CSV.

- an MNIST CSV of pixel rows (Kaggle's test.csv, no label column) → a submission `ImageId,Label`, ids from 1
  in input order;
- a folder of images, an index CSV of image files, or one image → `filename,label,confidence`;
- a CSV of x values, for a regression model → the values with a `prediction` column.

The model gets exactly what training fed it: raw values normalized by the data's own statistics. Images are
decoded, and every input is run and written, in batches, with a progress bar on a terminal.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor

from trainkit.commands.evaluate import Restored, restore
from trainkit.data.base import DataError, DataMeta
from trainkit.errors import ConfigError
from trainkit.reports.base import class_names
from trainkit.reports.inference import batches, deployable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
PATH_COLUMNS = ("filename", "file", "path", "image", "image_path", "filepath", "id")  # an index CSV's file column
DECODE_CHUNK = 4096  # image files decoded at a time: memory stays flat however many files there are


@dataclass
class Inputs:
    """What `input=` holds, read lazily: chunks of raw samples, each with its rows' leading CSV cells."""

    kind: str  # "kaggle", "images" or "values"
    count: int
    header: list[str]
    chunks: Iterator[tuple[Tensor, list[list[str]]]]
    labels: Tensor | None = None  # a labeled MNIST file's labels: the accuracy is printed too


def run_predict(cfg: DictConfig, run_dir: Path, console: Console) -> dict[str, Any]:
    batch_size = int(cfg.batch_size)
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be at least 1.")
    restored = restore(cfg)
    inputs = _inputs(Path(str(cfg.input)).expanduser(), restored)
    default = "submission.csv" if inputs.kind == "kaggle" else "predictions.csv"
    output = _output_path(cfg.get("output"), run_dir, default)
    predicted = _write(restored, inputs, output, batch_size, console)
    from trainkit.commands.train import _shown

    result: dict[str, Any] = {"input": str(cfg.input), "kind": inputs.kind, "rows": inputs.count, "output": str(output)}
    if inputs.labels is not None:
        result["accuracy"] = (predicted == inputs.labels).float().mean().item()
        console.print(f"accuracy against the labels in {cfg.input}: {result['accuracy']:.2%}", highlight=False)
    plural = "" if inputs.count == 1 else "s"
    console.print(f"wrote {inputs.count} prediction{plural} to [bold]{_shown(output)}[/bold]", highlight=False)
    return result


def _output_path(value: str | None, run_dir: Path, default: str) -> Path:
    if not value:
        return run_dir / default
    path = Path(str(value)).expanduser()
    if path.is_dir():
        path = path / default
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _inputs(path: Path, restored: Restored) -> Inputs:
    from trainkit.tasks.gan import GANTask
    from trainkit.tasks.regression import RegressionTask

    task, meta = restored.built.task, restored.built.data.meta
    if isinstance(task, GANTask):
        raise ConfigError(f"{restored.path} is a GAN: it takes no inputs to predict from. Draw new samples "
                          f"with `trainkit sample ckpt={restored.path} n=64`.")
    if not path.exists():
        raise DataError(f"predict: input={path} does not exist. Set input= to {_expected(task, meta)}.")
    if isinstance(task, RegressionTask):
        return _values(path, meta)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"predict: the folder input={path} holds no image files ({', '.join(IMAGE_SUFFIXES)}). "
                            f"Set input= to {_expected(task, meta)}.")
        return _images(files, [p.relative_to(path).as_posix() for p in files], meta)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _images([path], [path.name], meta)
    if meta.name == "mnist_csv" and _first_line_fields(path) >= 784:
        return _pixel_rows(path)
    files, names = _index_csv(path, meta)
    return _images(files, names, meta)


def _expected(task: Any, meta: DataMeta) -> str:
    from trainkit.tasks.regression import RegressionTask

    if isinstance(task, RegressionTask):
        return f"a CSV file of x values, {meta.in_shape[0]} per line (a header line is optional)"
    mnist = "an MNIST CSV of pixel rows (e.g. Kaggle's test.csv), " if meta.name == "mnist_csv" else ""
    c, h, w = meta.in_shape
    return (f"{mnist}a folder of {h}×{w} {'grayscale' if c == 1 else 'RGB'} images, an index CSV with a "
            f"filename column, or one image file")


def _first_line_fields(path: Path) -> int:
    with open(path, "rb") as f:
        return f.readline(1 << 16).count(b",") + 1


def _pixel_rows(path: Path) -> Inputs:
    from trainkit.data.mnist_csv import read_split

    split = read_split(str(path), layout="auto", key="input", cache=False)  # one pass: no cache files beside it
    x = split.x
    chunks = ((x[s:s + DECODE_CHUNK], [[str(i + 1)] for i in range(s, min(s + DECODE_CHUNK, len(x)))])
              for s in range(0, len(x), DECODE_CHUNK))
    return Inputs("kaggle", len(x), ["ImageId", "Label"], chunks, split.y)


def _images(files: list[Path], names: list[str], meta: DataMeta) -> Inputs:
    from trainkit.data.images import ImageError, read_images

    def chunks() -> Iterator[tuple[Tensor, list[list[str]]]]:
        for s in range(0, len(files), DECODE_CHUNK):
            try:
                x = read_images(files[s:s + DECODE_CHUNK], tuple(meta.in_shape))
            except ImageError as err:
                raise DataError(f"predict: {err}. This model takes {_expected_images(meta)}; fix that file "
                                f"or leave it out.") from None
            yield x, [[name] for name in names[s:s + DECODE_CHUNK]]

    return Inputs("images", len(files), ["filename", "label", "confidence"], chunks())


def _expected_images(meta: DataMeta) -> str:
    c, h, w = meta.in_shape
    return f"{h}×{w} {'grayscale' if c == 1 else 'RGB'} images (colours are converted, sizes are not)"


def _index_csv(path: Path, meta: DataMeta) -> tuple[list[Path], list[str]]:
    """An index CSV: a header with a filename (or file, path, image, id) column, or no header and the file
    names first on each line. Relative names are relative to the CSV's folder; a name without a suffix
    (an `id`) means `<name>.png`, as in the training data's index CSVs."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        rows = [(n, row) for n, row in enumerate(csv.reader(f), start=1) if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"predict: input={path} is empty; expected an index CSV with a filename column.")
    header = [cell.strip().lower() for cell in rows[0][1]]
    column = next((header.index(name) for name in PATH_COLUMNS if name in header), None)
    if column is None and Path(rows[0][1][0].strip()).suffix.lower() in IMAGE_SUFFIXES:
        column = 0
    elif column is None:
        mnist = " (an MNIST pixel CSV has 784 or 785 fields per line)" if meta.name == "mnist_csv" else ""
        raise DataError(
            f"predict: input={path} line 1 is {','.join(rows[0][1])[:80]!r}: neither a header with a "
            f"{'/'.join(PATH_COLUMNS[:4])} column nor an image file name{mnist}. Give an index CSV with a "
            f"filename column, a folder of images, or {'a pixel CSV' if mnist else 'one image file'}."
        )
    else:
        rows = rows[1:]
    names = []
    for number, row in rows:
        if len(row) <= column or not row[column].strip():
            raise DataError(f"predict: input={path} line {number} has no file name in column {column + 1}; "
                            f"fix or remove that line.")
        names.append(row[column].strip())
    if not names:
        raise DataError(f"predict: input={path} has a header but no files listed under it.")
    files = [Path(n if Path(n).suffix else n + ".png") for n in names]
    return [f if f.is_absolute() else path.parent / f for f in files], names


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
    outputs = ["prediction"] if meta.num_outputs == 1 else [f"prediction_{k}" for k in range(meta.num_outputs)]
    return Inputs("values", len(x), header + outputs, iter([(x, texts)]))


def _as_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _write(restored: Restored, inputs: Inputs, output: Path, batch_size: int, console: Console) -> Tensor:
    """Run every chunk in batches and write its rows; returns the predicted classes (empty for regression)."""
    model = deployable(restored.built.task, restored.built.data.meta)
    names = class_names(restored.built.data.meta)
    device = restored.built.device
    predicted: list[Tensor] = []
    progress = Progress(TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)
    with open(output, "w", newline="") as f, progress, torch.inference_mode():
        writer = csv.writer(f)
        writer.writerow(inputs.header)
        bar = progress.add_task("predict", total=inputs.count)
        for x, lead in inputs.chunks:
            done = 0
            for batch in batches(x, batch_size):
                with restored.autocast():
                    out = model(batch.to(device)).float().cpu()
                rows = lead[done:done + len(batch)]
                done += len(batch)
                if inputs.kind == "values":
                    writer.writerows(row + [f"{v:.9g}" for v in values] for row, values in zip(rows, out.tolist()))
                else:
                    confidence, label = torch.softmax(out, 1).max(1)
                    predicted.append(label)
                    if inputs.kind == "kaggle":
                        writer.writerows(row + [str(k)] for row, k in zip(rows, label.tolist()))
                    else:
                        writer.writerows(row + [names[k], f"{c:.4f}"]
                                         for row, k, c in zip(rows, label.tolist(), confidence.tolist()))
                progress.advance(bar, len(batch))
    return torch.cat(predicted) if predicted else torch.zeros(0, dtype=torch.long)
