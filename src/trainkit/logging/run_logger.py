"""The one logger the loop talks to: it fans out to the console, metrics.csv, each epoch's pictures and the chosen
experiment trackers (logging/trackers/: TensorBoard, CSV, MLflow, W&B)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from torch import Tensor

from trainkit.logging.console import ConsoleProgress
from trainkit.logging.metrics_csv import MetricsCSV


class RunLogger:
    def __init__(self, run_dir: Path, console: Console, max_epochs: int, *, progress: str = "auto",
                 plain_every_s: float = 10.0, batch_size: int = 1, history: list[dict[str, float]] | None = None,
                 trackers: Any = None) -> None:
        """`history`: the epoch rows a resumed run's checkpoint holds; `trackers`: a logging.trackers.Trackers that
        gets every metric and picture."""
        self.run_dir = Path(run_dir)
        self.progress = ConsoleProgress(console, max_epochs, progress, plain_every_s)
        self.csv = MetricsCSV(self.run_dir / "metrics.csv")
        self.csv.catch_up(history or [])  # a kill between checkpoint and CSV row must not lose the row
        self.batch_size = batch_size
        self.trackers = trackers
        self._window_start, self._window_steps = time.perf_counter(), 0

    def start_epoch(self, epoch: int, num_batches: int) -> None:
        self.progress.start_epoch(epoch, num_batches)
        self._window_start, self._window_steps = time.perf_counter(), 0

    def step(self, step: int, metrics: dict[str, float] | None) -> None:
        rate = None
        self._window_steps += 1
        if metrics is not None:
            now = time.perf_counter()
            rate = self._window_steps * self.batch_size / max(now - self._window_start, 1e-9)
            self._window_start, self._window_steps = now, 0
            if self.trackers is not None:
                self.trackers.metrics(step, metrics)
        self.progress.step(metrics, rate)

    def end_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        self.csv.write(epoch, step, metrics)
        if self.trackers is not None:
            self.trackers.metrics(step, {**metrics, "epoch": float(epoch)})
            self.trackers.flush()
        self.progress.end_epoch(epoch, metrics)

    def images(self, epoch: int, images: dict[str, Tensor]) -> None:
        if images:
            # Only here: importing torchvision at the top delays every run's first step, pictures or not.
            from torchvision.utils import save_image
        for name, image in images.items():
            path = self.run_dir / name / f"epoch_{epoch:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_image(image, path)
            if self.trackers is not None:
                self.trackers.image(name, image, epoch)

    def picture(self, name: str, image: Image.Image) -> None:
        """A picture made once (the first training batch): to the trackers; the caller saves the file."""
        if self.trackers is not None:
            from trainkit.reports.render import to_tensor

            self.trackers.image(name, to_tensor(image), 0)

    def close(self) -> None:
        self.progress.close()
        if self.trackers is not None:
            self.trackers.flush()


class SilentLogger:
    """For ranks > 0 of a data-parallel run: rank 0 alone reports."""

    def start_epoch(self, epoch: int, num_batches: int) -> None: ...
    def step(self, step: int, metrics: dict[str, float] | None) -> None: ...
    def end_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None: ...
    def images(self, epoch: int, images: dict[str, Tensor]) -> None: ...
    def picture(self, name: str, image: Image.Image) -> None: ...
    def close(self) -> None: ...
