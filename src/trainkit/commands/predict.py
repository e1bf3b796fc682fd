"""`trainkit predict ckpt=PATH input=PATH`: run a trained model on new data and write one CSV.

What `input=` can be is the model's dataset's to say (its reader of new inputs, trainkit.data.inputs): for images,
a folder of images, an index CSV of image files or one image (an MNIST model also takes a CSV of pixel rows, and
writes a Kaggle submission); for other samples, a CSV of values. Each output row starts with the input's own cells,
then the task's columns (a classifier's `label,confidence`). What a prediction is belongs to the task
(`Task.predict`): raw values in, normalized as in training inside. Inputs are decoded a chunk at a time and run and
written in batches, with a progress bar on a terminal, so memory stays flat however many there are. Each batch's rows
reach the file whole, at once: a predict stopped part-way (a signal, an unreadable input, a full disk) leaves the
header and whole rows, and says how many (PredictStopped).
"""

from __future__ import annotations

import csv
import io
import os
import traceback
from dataclasses import dataclass
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
from trainkit.errors import EXIT_CODES, ConfigError, UserError, os_error_message
from trainkit.logging.text import shown
from trainkit.reports.inference import batches
from trainkit.restore import Restored, restore, task_member


class PredictStopped(UserError):
    """A predict that ended part-way (a signal, an unreadable input, a full disk) after writing some rows: the file
    holds the header and whole rows only, and says how many."""

    keeps_run_dir = True  # the rows written are a result: they stay, even in a run directory this line made

    def __init__(self, message: str, exit_code: int = EXIT_CODES["error"]) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class PredictInterrupted(PredictStopped, KeyboardInterrupt):
    """Ctrl-C part-way: a KeyboardInterrupt still, for Python code that runs predict (trainkit.api.run)."""


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
    score = task_member(restored, "score") if callable(getattr(restored.task, "score", None)) else None  # optional
    scored = inputs.labels is not None and score is not None
    predicted = _write(restored, inputs, columns, output, Options(batch_size, scored, ctx.run_dir), ctx.console)
    result: dict[str, Any] = {"input": str(cfg.input), "kind": inputs.format, "rows": inputs.count, "output": str(output)}
    if scored:
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


@dataclass
class Options:
    """How `_write` runs."""

    batch_size: int
    scored: bool  # the inputs carry labels to score against: the predictions are kept (as many as the labels held)
    run_dir: Path  # where a bug's traceback is kept


def _write(restored: Restored, inputs: Inputs, columns: list[str], output: Path, options: Options,
           console: Console) -> list[Any]:
    """Run every chunk in batches and write its rows; returns the prediction per input where they are scored (else
    nothing: memory does not grow with the inputs). A submission keeps only the first column (the prediction), under
    its own header."""
    keep = columns[:1] if inputs.submission else columns
    predict = task_member(restored, "predict")
    predicted: list[Any] = []
    progress = Progress(TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)
    rows = Rows(output, inputs.header + ([inputs.submission] if inputs.submission else keep))
    try:
        with progress, torch.inference_mode():
            bar = progress.add_task("predict", total=inputs.count)
            for x, lead in inputs.chunks:
                done = 0
                for batch in batches(x, options.batch_size):
                    with restored.autocast():
                        out = predict(batch)
                    n = len(batch)
                    rows.add([row + [_cell(out.columns[c][i]) for c in keep]
                              for i, row in enumerate(lead[done:done + n])])
                    done += n
                    if options.scored:
                        predicted.extend(out.values)
                    progress.advance(bar, n)
    except (Exception, KeyboardInterrupt) as exc:
        written = rows.stop()
        if not written:  # nothing predicted yet: no file, and the error as it was (a refusal, a stop)
            output.unlink(missing_ok=True)
            raise
        raise _stopped(exc, written, inputs.count, output, options.run_dir) from exc
    rows.close()
    return predicted


class Rows:
    """The output CSV, written a batch of whole rows at a time, each batch in one write to the file (unbuffered, so
    what is written is there for any reader): a stop leaves the header and whole rows, and `stop` cuts off a row
    that was half-written when it came."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self.file = open(path, "wb", buffering=0)  # noqa: SIM115 (closed by stop or close)
        self.text = io.StringIO()
        self.csv = csv.writer(self.text)  # the csv module's dialect, "\r\n" line ends, as for any CSV it writes
        self.whole = (0, self._write([header]))  # (rows, bytes) in the file: one assignment, never split by a signal

    def add(self, rows: list[list[str]]) -> None:
        size = self._write(rows)
        self.whole = (self.whole[0] + len(rows), self.whole[1] + size)

    def _write(self, rows: list[list[str]]) -> int:
        self.text.seek(0)
        self.text.truncate()
        self.csv.writerows(rows)
        data = memoryview(self.text.getvalue().encode("utf-8", "surrogateescape"))  # undecodable names as on disk
        size = len(data)
        while data:
            data = data[self.file.write(data):]
        return size

    def stop(self) -> int:
        """Cut the file back to its header and whole rows and close it; the number of rows."""
        rows, size = self.whole
        try:
            os.ftruncate(self.file.fileno(), size)
        finally:
            self.file.close()
        return rows

    def close(self) -> None:
        self.file.close()


def _stopped(exc: BaseException, written: int, total: int, output: Path, run_dir: Path) -> PredictStopped:
    """`exc`, met after `written` rows, as one paragraph that also says where those rows are."""
    partial = (f"predict stopped part-way: it wrote {written:,} of {total:,} rows to {shown(output)} (a valid partial "
               f"CSV: the header and whole rows only).")
    if isinstance(exc, KeyboardInterrupt):
        return PredictInterrupted(f"stopped by Ctrl-C (SIGINT). {partial}", EXIT_CODES["sigint"])
    if isinstance(exc, UserError):  # bad data, and SIGTERM (trainkit.errors.Stopped), with its exit code
        return PredictStopped(f"{str(exc).rstrip('.')}. {partial}", exc.exit_code)
    if isinstance(exc, OSError):  # e.g. the disk is full
        return PredictStopped(f"{os_error_message(exc).rstrip('.')}. {partial}")
    if isinstance(exc, MemoryError):
        return PredictStopped(f"predict ran out of memory: make batch_size smaller. {partial}")
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    said = " ".join(str(exc).split())[:300]
    return PredictStopped(f"trainkit predict failed on an unexpected {type(exc).__name__}{': ' + said if said else ''}"
                          f"{where}. This is a bug in trainkit, please report it{_kept(exc, run_dir)}. {partial}")


def _kept(exc: BaseException, run_dir: Path) -> str:
    """A bug's traceback, appended to the run's log file (kept with the run directory): where, for its message."""
    log = run_dir / "predict.log"  # hydra.job.name in configs/predict.yaml; the Python API's log file too
    try:
        with open(log, "a", encoding="utf-8", errors="backslashreplace") as f:
            f.write("".join(traceback.format_exception(exc)))
    except OSError:
        return ""
    return f"; its traceback is in {shown(log)}"


def _cell(value: Any) -> str:
    return f"{value:.9g}" if isinstance(value, float) else str(value)
