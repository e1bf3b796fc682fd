"""`logger=csv`: a plain CSV tracker. Every metric it is sent is one row `step,name,value` of csv/metrics.csv in the
run directory (the step rows of train/ every trainer.log_every_n_steps, each epoch's row, and at the end best/ and
test/ results), and the run's flattened config is csv/params.csv (`key,value`): a long table that pandas, a
spreadsheet or R reads as it is. Pictures stay the PNG files of the run directory."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from torch import Tensor

from trainkit.logging.trackers import TrackerRun, finite, results
from trainkit.registry import register_tracker


@register_tracker("csv")
class CSVTracker:
    def __init__(self, run: TrackerRun, folder: str = "csv") -> None:
        self.dir = run.run_dir / folder
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run_id = str(self.dir)
        self.path = self.dir / "metrics.csv"
        if run.resume_step is not None and self.path.is_file():
            self._keep_until(run.resume_step)  # what the stopped process logged after its checkpoint is redone
        if not self.path.is_file():
            self.path.write_text("step,name,value\n")
        with (self.dir / "params.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["key", "value"])
            writer.writerows([k, v] for k, v in run.params.items())

    def _keep_until(self, step: int) -> None:
        with self.path.open(newline="") as f:
            rows = [row for row in csv.reader(f)]
        kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) <= step]
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            csv.writer(f).writerows(kept)
        tmp.replace(self.path)

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:  # appended as it comes: a killed run keeps what it logged
            csv.writer(f).writerows([step, name, repr(value)] for name, value in finite(metrics).items())

    def image(self, tag: str, image: Tensor, step: int) -> None:
        """Pictures are not rows: they stay PNG files in the run directory."""

    def flush(self) -> None:
        """Every row is written as it comes."""

    def finish(self, summary: dict[str, Any], pictures: list[Path]) -> None:
        self.metrics(int(summary.get("steps") or 0), results(summary))

    def end(self, status: str) -> None:
        """Nothing stays open."""
