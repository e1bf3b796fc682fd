"""`trainkit predict ckpt=PATH input=PATH`: run a trained model on new data and write one CSV.

What `input=` can be is the model's dataset's to say (its reader of new inputs, trainkit.data.inputs): for images,
a folder of images, an index CSV of image files or one image (an MNIST model also takes a CSV of pixel rows, and
writes a Kaggle submission); for other samples, a CSV of values. Each output row starts with the input's own cells,
then the task's columns (a classifier's `label,confidence`). What a prediction is belongs to the task
(`Task.predict`): raw values in, normalized as in training inside. Inputs are decoded, run and written in batches,
with a progress bar on a terminal.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from trainkit import registry
from trainkit.build import not_the_checkpoint, whole_number
from trainkit.commands import Context
from trainkit.data.base import DataError, regular_file
from trainkit.data.inputs import Inputs, default_reader
from trainkit.errors import ConfigError
from trainkit.logging.text import shown
from trainkit.reports.inference import batches
from trainkit.restore import Restored, restore, task_member


def run_predict(cfg: DictConfig, ctx: Context) -> dict[str, Any]:
    batch_size = whole_number(cfg.get("batch_size"), "batch_size", 1, 1024)
    restored = restore(cfg.ckpt, cfg, line=ctx.line)
    columns = _columns(restored)  # the task says no here, before any input is read, if it takes none
    reader = _reader(restored)
    path = Path(str(cfg.input)).expanduser()
    if not path.exists() and not path.is_symlink():
        raise DataError(f"predict: input={path} does not exist. Set input= to {reader.expected()}.")
    if not path.is_dir():  # a FIFO or a device would block whatever reads it
        regular_file(path, "predict: input")
    inputs = reader.read(path)
    output = _output_path(cfg.get("output"), ctx.run_dir, inputs.output)
    if output.exists() and not path.is_dir() and output.resolve() == path.resolve():
        raise ConfigError(f"output={output} is the input file itself: predictions written there would replace the "
                          f"inputs as they are read. Give output= another file.")
    not_the_checkpoint(output, restored.path)
    predicted = _write(restored, inputs, columns, output, batch_size, ctx.console)
    result: dict[str, Any] = {"input": str(cfg.input), "kind": inputs.format, "rows": inputs.count, "output": str(output)}
    score = task_member(restored, "score") if callable(getattr(restored.task, "score", None)) else None  # optional
    if inputs.labels is not None and score is not None:
        for name, value in score(predicted, inputs.labels).items():
            result[name] = value
            ctx.console.print(f"{name} against the labels in {cfg.input}: {value:.4g}", highlight=False)
    plural = "" if inputs.count == 1 else "s"
    ctx.console.print(f"wrote {inputs.count} prediction{plural} to [bold]{shown(output)}[/bold]", highlight=False)
    return result


def _reader(restored: Restored) -> Any:
    """The reader of new inputs that the checkpoint's dataset registered, else the one for its samples' shape."""
    data = OmegaConf.to_container(restored.recipe.data, resolve=True) if restored.recipe.get("data") else {}
    name = data.get("name") if isinstance(data, dict) else None
    entry = registry.DATASETS.entries.get(name) if isinstance(name, str) else None
    reader = (entry.load_inputs() if entry is not None else None) or default_reader(restored.meta)
    return reader(restored.meta, data if isinstance(data, dict) else {})


def _columns(restored: Restored) -> list[str]:
    """The task's output columns, asked of an empty batch."""
    empty = torch.zeros(0, *restored.meta.in_shape)
    with torch.inference_mode():
        return list(task_member(restored, "predict")(empty).columns)


def _output_path(value: str | None, run_dir: Path, default: str) -> Path:
    if not value:
        return run_dir / default
    path = Path(str(value)).expanduser()
    if path.is_dir():
        path = path / default
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write(restored: Restored, inputs: Inputs, columns: list[str], output: Path, batch_size: int,
           console: Console) -> list[Any]:
    """Run every chunk in batches and write its rows; returns the prediction per input. A submission keeps only the
    first column (the prediction), under its own header."""
    keep = columns[:1] if inputs.submission else columns
    predict = task_member(restored, "predict")
    predicted: list[Any] = []
    progress = Progress(TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)
    with open(output, "w", newline="") as f, progress, torch.inference_mode():
        writer = csv.writer(f)
        writer.writerow(inputs.header + ([inputs.submission] if inputs.submission else keep))
        bar = progress.add_task("predict", total=inputs.count)
        for x, lead in inputs.chunks:
            done = 0
            for batch in batches(x, batch_size):
                with restored.autocast():
                    out = predict(batch)
                rows = lead[done:done + len(batch)]
                done += len(batch)
                writer.writerows(row + [_cell(out.columns[c][i]) for c in keep] for i, row in enumerate(rows))
                predicted.extend(out.values)
                progress.advance(bar, len(batch))
    return predicted


def _cell(value: Any) -> str:
    return f"{value:.9g}" if isinstance(value, float) else str(value)
