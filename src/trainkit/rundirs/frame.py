"""Runs as a pandas DataFrame: `trainkit.runs("outputs/multirun/DATE/TIME")` for a sweep's jobs, `trainkit.runs()` for
every run under outputs/. One row per run, newest first, with the columns of sweep_summary.csv (read.run_row) and
`started` (a timestamp): filter, group and plot runs with pandas instead of reading their files by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainkit import storage
from trainkit.rundirs.read import RunsError, find_runs, run_row


def runs_frame(root: Path) -> Any:
    """Every training run at or below `root` (single runs and sweep jobs alike), newest first; an empty frame with
    the usual columns when there is none."""
    import pandas as pd

    if storage.is_url(root):
        from trainkit.rundirs.remote import readable

        root = readable(str(root))
    if not Path(root).is_dir():
        raise RunsError(f"{root} is not a directory: give the folder that holds the runs, e.g. outputs or a sweep's "
                        f"outputs/multirun/<date>/<time>.")
    rows = [{"path": str(run.path), "started": pd.Timestamp(run.started, unit="s"), **run_row(run)}
            for run in find_runs(Path(root))]
    for row in rows:
        row["path"] = storage.url_of(row["path"]) or row["path"]  # a URL's local copy is shown as the URL
    columns = ["path", "started", "status", "overrides", "monitor", "best_value", "best_epoch", "epochs",
               "wall_time_s"]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=[*columns, "error"])
    for column in frame.columns.difference(columns):  # override values as typed: numbers where they all are
        try:
            frame[column] = pd.to_numeric(frame[column])
        except (ValueError, TypeError):
            pass
    first = [c for c in columns if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]
