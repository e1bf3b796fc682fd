"""Progress on the console: a rich progress bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _fmt(metrics: dict[str, float], keys: list[str] | None = None) -> str:
    items = [(k, metrics[k]) for k in (keys or metrics) if k in metrics]
    return "  ".join(f"{k} {v:.4g}" for k, v in items)


class ConsoleProgress:
    """`mode`: rich (live bar), plain (a line at most every `plain_every_s` seconds), none, or auto."""

    REFRESH_S = 1.0  # the live bar's redraw interval (seconds): each redraw lays out a whole rich table

    def __init__(self, console: Console, max_epochs: int, mode: str = "auto", plain_every_s: float = 10.0) -> None:
        if mode == "auto":
            mode = "rich" if console.is_terminal else "plain"
        self.console, self.mode, self.max_epochs, self.plain_every_s = console, mode, max_epochs, plain_every_s
        self.progress: Progress | None = None
        self.task_id = None
        self.last_line = 0.0
        self.epoch, self.done, self.total = 0, 0, 0
        self.info = ""  # the latest training metrics, shown after the bar
        self.epoch_start = time.perf_counter()

    def start_epoch(self, epoch: int, num_batches: int) -> None:
        self.epoch, self.done, self.total = epoch, 0, num_batches
        self.epoch_start = self.last_line = time.perf_counter()
        if self.mode == "rich":
            if self.progress is None:
                self.progress = Progress(
                    TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=self.console, transient=True, auto_refresh=False,
                )
                self.progress.start()
            label = f"{epoch}/{self.max_epochs}"
            if self.task_id is None:
                self.task_id = self.progress.add_task("train", total=num_batches, epoch=label, info="")
            else:
                self.progress.reset(self.task_id, total=num_batches, epoch=label, info="")
            self.info = ""
            self.progress.refresh()

    def step(self, metrics: dict[str, float] | None, samples_per_s: float | None) -> None:
        self.done += 1
        if self.mode == "rich":
            # Redrawn from this thread, at most REFRESH_S apart: rich's own refresh thread redraws 10 times a
            # second, and each redraw holds the GIL while the training thread waits to launch its next op (what
            # that cost is measured in benchmarks/README.md).
            if metrics is not None:
                self.info = _fmt(metrics) + (f"  {samples_per_s:,.0f} samples/s" if samples_per_s else "")
            now = time.perf_counter()
            if now - self.last_line < self.REFRESH_S:
                return
            self.last_line = now
            self.progress.update(self.task_id, completed=self.done, info=self.info)
            self.progress.refresh()
        elif self.mode == "plain" and metrics is not None:
            now = time.perf_counter()
            if now - self.last_line >= self.plain_every_s:
                self.last_line = now
                rate = f"  {samples_per_s:,.0f} samples/s" if samples_per_s else ""
                self.console.print(f"epoch {self.epoch}/{self.max_epochs} batch {self.done}/{self.total}  {_fmt(metrics)}{rate}",
                                   highlight=False)

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.mode == "none":
            return
        shown = {k: v for k, v in metrics.items() if not k.startswith("lr/")}
        self.console.print(f"[bold]epoch {epoch}/{self.max_epochs}[/bold]  {_fmt(shown)}", highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
