"""Reading what runs wrote (.hydra/, summary.json, metrics.csv, the `.lock` a live run holds): one run's status and
results, every run under a folder, and how a run shows in a table. No database, no torch.

`trainkit runs`, sweep summaries (sweeps.py), curves (curves.py) and `trainkit.runs(...)` (frame.py) all read runs
through `read_run`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainkit.errors import UserError
from trainkit.logging.text import number
from trainkit.rundirs.claim import is_locked

# A run holds `.lock` from just before its first step; until then (imports, reading data) it has neither a lock
# nor a summary. Younger than this, such a run is taken as starting up ("running"); older, as "crashed".
STARTUP_GRACE_S = 120.0
STATUS_STYLE = {"finished": "green", "running": "cyan", "interrupted": "yellow", "failed": "bold red",
                "crashed": "bold red"}


class RunsError(UserError):
    """A path given to `trainkit runs` that is not what it should be."""


@dataclass
class Run:
    """What one run directory says about itself."""

    path: Path
    started: float  # seconds since the epoch: when Hydra wrote .hydra/config.yaml
    overrides: list[str]  # as typed on the command line (.hydra/overrides.yaml)
    status: str  # finished, running, interrupted, failed (with `error`), crashed (died without a word)
    summary: dict[str, Any] = field(default_factory=dict)  # summary.json; {} while running or after a crash
    epochs: int = 0  # epochs done
    max_epochs: int | None = None
    error: str = ""

    @property
    def best_value(self) -> float | None:
        value = self.summary.get("best_value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        try:
            return value if math.isfinite(value) else None
        except OverflowError:  # an integer beyond any float: a damaged summary.json
            return None

    @property
    def monitor(self) -> str:
        value = self.summary.get("monitor")
        return value if isinstance(value, str) else ""

    @property
    def maximize(self) -> bool:
        return self.summary.get("monitor_mode") == "max"


def _yaml(path: Path) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: fast enough for hundreds of runs
    try:
        return yaml.load(path.read_text(), Loader=loader)
    except (OSError, ValueError, yaml.YAMLError):  # unreadable, not UTF-8, not YAML: a damaged file says nothing
        return None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def metric_rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            return [row for row in csv.DictReader(f) if None not in row]  # a row with more cells than the header
    except (OSError, ValueError, csv.Error):  # unreadable, not UTF-8, NUL bytes: a damaged file has no rows
        return []


def overrides_of(path: Path) -> list[str]:
    """The overrides a run was started with, as typed (Hydra's .hydra/overrides.yaml)."""
    found = _yaml(Path(path) / ".hydra" / "overrides.yaml")
    return [str(o) for o in found] if isinstance(found, list) else []  # a damaged file: none known


def read_run(path: Path) -> Run:
    path = Path(path)
    config_file = path / ".hydra" / "config.yaml"
    started = config_file.stat().st_mtime if config_file.exists() else path.stat().st_mtime
    overrides = overrides_of(path)
    config = _yaml(config_file) or {}
    trainer = config.get("trainer") if isinstance(config, dict) else None
    max_epochs = trainer.get("max_epochs") if isinstance(trainer, dict) else None
    summary = _json(path / "summary.json")
    if is_locked(path):
        status = "running"  # also a resumed run whose summary.json is from its interrupted past
    elif summary:
        status = str(summary.get("status", "finished"))
        if status not in STATUS_STYLE:  # a damaged or hand-edited summary.json: not a status trainkit writes
            summary = {"status": "failed", "error": f"summary.json says status {status[:40]!r}, which trainkit never "
                                                    f"writes: the file was damaged or edited"}
            status = "failed"
    elif not (path / ".lock").exists() and time.time() - started < STARTUP_GRACE_S:
        status = "running"
    else:
        status = "crashed"
    error = str(summary.get("error", "")) if status in ("failed", "interrupted") else ""
    if status == "crashed":
        error = "no summary.json and no process holds the run: it was killed (kill -9, out of memory) or crashed"
    epochs = summary.get("epochs") if status != "running" else None
    if not isinstance(epochs, int):
        epochs = len(metric_rows(path / "metrics.csv"))
    return Run(path, started, overrides, status, summary if status != "running" else {}, epochs,
               max_epochs if isinstance(max_epochs, int) else None, error)


def _is_train_run(path: Path) -> bool:
    """Only `trainkit train` writes summary.json; a run without one is a training run if Hydra named its job so."""
    if (path / "summary.json").is_file():
        return True
    hydra = _yaml(path / ".hydra" / "hydra.yaml")
    return isinstance(hydra, dict) and ((hydra.get("hydra") or {}).get("job") or {}).get("name") == "train"


def find_runs(root: Path) -> list[Run]:
    """Every training run at or below `root` (single runs and sweep jobs alike), newest first."""
    found: list[Path] = []
    for dirpath, dirnames, _ in os.walk(root):
        if ".hydra" in dirnames:
            found.append(Path(dirpath))
            dirnames[:] = []  # runs do not nest: nothing below a run is another run
        else:
            dirnames.sort()
    runs = [read_run(p) for p in found if (p / ".hydra" / "config.yaml").is_file() and _is_train_run(p)]
    return sorted(runs, key=lambda r: (r.started, str(r.path)), reverse=True)


def _param(override: str) -> tuple[str, str]:
    key, _, value = override.lstrip("+~").partition("=")
    return key, value


def run_row(run: Run) -> dict[str, Any]:
    """A run as one table row: overrides, status, the monitored metric's best, epochs and time, then one column per
    override key, `final:<metric>` and `best:<metric>` (the best epoch's row), the test metrics, the error and the
    directory (sweep_summary.csv's columns, and trainkit.runs(...)'s)."""
    s = run.summary
    row: dict[str, Any] = {
        "overrides": " ".join(run.overrides), "status": run.status, "monitor": run.monitor,
        "best_value": run.best_value, "best_epoch": s.get("best_epoch"), "epochs": run.epochs,
        "wall_time_s": s.get("wall_time_s"),
    }
    row.update(_param(o) for o in run.overrides)
    for prefix, metrics in (("final:", _mapping(s.get("final"))), ("best:", _mapping(s.get("best")))):
        row.update({prefix + k: v for k, v in metrics.items() if k not in ("epoch", "step")})
    row.update(_mapping(s.get("test")))
    row.update({"error": run.error, "path": str(run.path)})
    return row


def _mapping(value: Any) -> dict[str, Any]:
    """A section of summary.json as a mapping of names to values ({} where a damaged file has something else)."""
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def best_cell(run: Run, with_name: bool = True) -> str:
    if run.best_value is None:
        return ""
    name = f"{run.monitor} " if with_name else ""
    return f"{name}{number(run.best_value)} @{run.summary.get('best_epoch')}"


def status_cell(run: Run) -> str:
    return f"[{STATUS_STYLE.get(run.status, '')}]{run.status}[/]"


def epochs_cell(run: Run) -> str:
    return f"{run.epochs}/{run.max_epochs}" if run.max_epochs else str(run.epochs)


def run_dir_of(spec: str, root: Path) -> Path:
    """A run directory, or any path inside one (e.g. its checkpoints/best.ckpt); as given, or as `trainkit runs`
    shows it (relative to DIR)."""
    path = Path(spec)
    if not path.exists() and (root / spec).exists():
        path = root / spec
    if path.exists():
        for candidate in (path, *path.resolve().parents):
            if (candidate / ".hydra" / "config.yaml").is_file():
                return candidate
    raise RunsError(f"{spec} is not a run directory (no .hydra/config.yaml in it or above it): give a "
                    f"directory that `trainkit runs` lists, e.g. outputs/<date>/<time>.")


def stored_config(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    stored = OmegaConf.load(path / ".hydra" / "config.yaml")
    try:
        return OmegaConf.to_container(stored, resolve=True)  # type: ignore[return-value]
    except Exception:  # an interpolation that cannot resolve here: compare it as written
        return OmegaConf.to_container(stored, resolve=False)  # type: ignore[return-value]
