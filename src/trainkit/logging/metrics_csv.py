"""metrics.csv: one row per epoch, columns `epoch`, `step`, then metrics named `split/name`."""

from __future__ import annotations

import csv
from pathlib import Path


class MetricsCSV:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.columns: list[str] | None = None
        if self.path.exists() and self.path.stat().st_size:  # a resumed run appends to its own file
            with self.path.open(newline="") as f:
                self.columns = next(csv.reader(f), None)

    def catch_up(self, history: list[dict[str, float]]) -> None:
        """Append the rows of `history` (epoch rows with epoch and step) that the file does not have yet."""
        done = set()
        if self.columns is not None:
            with self.path.open(newline="") as f:
                done = {int(row["epoch"]) for row in csv.DictReader(f) if row.get("epoch")}
        for row in history:
            if int(row["epoch"]) not in done:
                metrics = {k: v for k, v in row.items() if k not in ("epoch", "step")}
                self.write(int(row["epoch"]), int(row["step"]), metrics)

    def write(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        row = {"epoch": epoch, "step": step, **metrics}
        new_file = self.columns is None
        if new_file:
            self.columns = list(row)
        # Full precision: repr() of a float round-trips exactly.
        values = [repr(row[c]) if isinstance(row.get(c), float) else row.get(c, "") for c in self.columns]
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new_file:
                writer.writerow(self.columns)
            writer.writerow(values)
