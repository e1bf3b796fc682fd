"""`trainkit runs [DIR]` lists past training runs, newest first; `trainkit runs --compare A B` sets two side by side
(`--plot PATH`: and draws their curves, trainkit.curves).

It reads only what runs already write (.hydra/, summary.json, metrics.csv, the `.lock` a live run holds): no
database, no torch. `trainkit.sweep` reads jobs through the same `read_run`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich import box
from rich.console import Console
from rich.table import Table

from trainkit.errors import UserError
from trainkit.rundirs import config_diff, is_locked
from trainkit.logging.text import number, shown

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
        return value if isinstance(value, (int, float)) and math.isfinite(value) else None

    @property
    def monitor(self) -> str:
        return self.summary.get("monitor") or ""

    @property
    def maximize(self) -> bool:
        return self.summary.get("monitor_mode") == "max"


def _yaml(path: Path) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: fast enough for hundreds of runs
    try:
        return yaml.load(path.read_text(), Loader=loader)
    except (OSError, yaml.YAMLError):
        return None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _metric_rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def overrides_of(path: Path) -> list[str]:
    """The overrides a run was started with, as typed (Hydra's .hydra/overrides.yaml)."""
    return [str(o) for o in (_yaml(Path(path) / ".hydra" / "overrides.yaml") or [])]


def read_run(path: Path) -> Run:
    path = Path(path)
    config_file = path / ".hydra" / "config.yaml"
    started = config_file.stat().st_mtime if config_file.exists() else path.stat().st_mtime
    overrides = overrides_of(path)
    config = _yaml(config_file) or {}
    max_epochs = (config.get("trainer") or {}).get("max_epochs") if isinstance(config, dict) else None
    summary = _json(path / "summary.json")
    if is_locked(path):
        status = "running"  # also a resumed run whose summary.json is from its interrupted past
    elif summary:
        status = str(summary.get("status", "finished"))
    elif not (path / ".lock").exists() and time.time() - started < STARTUP_GRACE_S:
        status = "running"
    else:
        status = "crashed"
    error = str(summary.get("error", "")) if status in ("failed", "interrupted") else ""
    if status == "crashed":
        error = "no summary.json and no process holds the run: it was killed (kill -9, out of memory) or crashed"
    epochs = summary.get("epochs") if status != "running" else None
    if not isinstance(epochs, int):
        epochs = len(_metric_rows(path / "metrics.csv"))
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


def best_cell(run: Run, with_name: bool = True) -> str:
    if run.best_value is None:
        return ""
    name = f"{run.monitor} " if with_name else ""
    return f"{name}{number(run.best_value)} @{run.summary.get('best_epoch')}"


def status_cell(run: Run) -> str:
    return f"[{STATUS_STYLE.get(run.status, '')}]{run.status}[/]"


def _epochs_cell(run: Run) -> str:
    return f"{run.epochs}/{run.max_epochs}" if run.max_epochs else str(run.epochs)


def list_runs(console: Console, root: Path, limit: int) -> int:
    if not root.is_dir():
        raise RunsError(f"{root} is not a directory: run `trainkit runs` where you ran `trainkit train` (its runs "
                        f"are in outputs/ there), or give the folder they are in: trainkit runs DIR.")
    runs = find_runs(root)
    if not runs:
        console.print(f"no training runs under {root}: `trainkit train` writes them to outputs/<date>/<time>/ and "
                      f"sweep jobs to outputs/multirun/<date>/<time>/<n>_<overrides>/.", markup=False)
        return 0
    shown = runs if limit <= 0 else runs[:limit]
    monitors = {r.monitor for r in shown if r.monitor}
    shared = next(iter(monitors)) if len(monitors) == 1 else ""  # then named once, in the header
    common = [o for o in shown[0].overrides if all(o in r.overrides for r in shown)] if len(shown) > 1 else []
    table = Table(title=f"trainkit runs under {root}/: {len(runs)}, newest first", box=box.SIMPLE_HEAD,
                  show_edge=False, caption=f"common to all: {' '.join(common)}" if common else None,
                  caption_justify="left")
    wide = console.width >= 110  # narrower: the run's path (<date>/<time>) says when it started
    if wide:
        table.add_column("started", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column(f"best\n{shared}" if shared else "best", justify="right", no_wrap=bool(shared))
    table.add_column("epochs", justify="right", no_wrap=True)
    table.add_column(f"run (in {root}/)", overflow="fold", ratio=1)  # sweep jobs: long <n>_<overrides> names
    table.add_column("overrides", overflow="fold", min_width=16, ratio=1)
    for run in shown:
        overrides = " ".join(o for o in run.overrides if o not in common) or ("(defaults)" if not run.overrides else "")
        cells = [status_cell(run), best_cell(run, with_name=not shared), _epochs_cell(run), _under(run.path, root),
                 overrides]
        table.add_row(*([time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started))] if wide else []), *cells)
    console.print(table)
    if len(shown) < len(runs):
        console.print(f"{len(runs) - len(shown)} older runs not shown: --limit 0 lists them all.")
    return 0


def _under(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _run_dir_of(spec: str, root: Path) -> Path:
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


def _config(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    stored = OmegaConf.load(path / ".hydra" / "config.yaml")
    try:
        return OmegaConf.to_container(stored, resolve=True)  # type: ignore[return-value]
    except Exception:  # an interpolation that cannot resolve here: compare it as written
        return OmegaConf.to_container(stored, resolve=False)  # type: ignore[return-value]


def _metrics(run: Run) -> dict[str, float]:
    """Final metrics, then test metrics; a run without a summary shows its last metrics.csv row."""
    final = dict(run.summary.get("final") or {})
    if not final:
        rows = _metric_rows(run.path / "metrics.csv")
        final = {k: float(v) for k, v in (rows[-1] if rows else {}).items() if v not in ("", None)}
    shown = {f"final {k}": v for k, v in final.items() if k not in ("epoch", "step")}
    shown.update(run.summary.get("test") or {})
    return shown


def compare(console: Console, a_spec: str, b_spec: str, root: Path, plot: Path | None = None) -> int:
    a, b = read_run(_run_dir_of(a_spec, root)), read_run(_run_dir_of(b_spec, root))
    for label, run in (("A", a), ("B", b)):
        console.print(f"[bold]{label}[/bold] {shown(run.path)}  {status_cell(run)}  "
                      f"{' '.join(run.overrides) or '(defaults)'}", highlight=False)
        if run.error:
            console.print(f"  {run.error}", markup=False, highlight=False)
    diff = config_diff(_config(a.path), _config(b.path))
    if diff:
        table = Table(title=f"config: {len(diff)} difference{'s' if len(diff) > 1 else ''}")
        for column in ("key", "A", "B"):
            table.add_column(column, overflow="fold")
        for key, va, vb in diff:
            table.add_row(key, str(va), str(vb))
        console.print(table)
    else:
        console.print("config: identical")
    table = Table(title="metrics")
    for column, justify in (("metric", "left"), ("A", "right"), ("B", "right"), ("B − A", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    monitors = [r.monitor for r in (a, b) if r.monitor]
    if monitors:
        table.add_row(f"best {monitors[0]} (@epoch)", best_cell(a, False), best_cell(b, False),
                      _delta(a.best_value, b.best_value) if a.monitor == b.monitor else "")
    table.add_row("epochs", _epochs_cell(a), _epochs_cell(b), "")
    ma, mb = _metrics(a), _metrics(b)
    for key in [*ma, *(k for k in mb if k not in ma)]:
        table.add_row(key, number(ma.get(key)), number(mb.get(key)), _delta(ma.get(key), mb.get(key)))
    wa, wb = a.summary.get("wall_time_s"), b.summary.get("wall_time_s")
    table.add_row("wall time (s)", number(wa), number(wb), _delta(wa, wb))
    console.print(table)
    if plot is not None:
        from trainkit import curves

        if curves.draw([a, b], plot, title="A: " + shown(a.path) + "\nB: " + shown(b.path)) is None:
            raise RunsError(f"--plot {plot}: neither run has a metrics.csv row to draw yet.")
        console.print(f"curves: {shown(plot)}", markup=False, highlight=False)
    return 0


def _delta(a: Any, b: Any) -> str:
    """b − a, and relative to a when that means something: `+0.0024 (+79.2%)`."""
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b)):
        return ""
    if a == b:
        return "0"
    return f"{b - a:+.4g}" + (f" ({(b - a) / abs(a):+.1%})" if a else "")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="trainkit runs", description="List past training runs (newest first), or compare two. It reads the "
        "files every run writes; nothing else is kept.")
    parser.add_argument("dir", nargs="?", type=Path, default=Path("outputs"),
                        help="where to look for runs, single runs and sweep jobs alike (default: outputs)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"),
                        help="two run directories (as given, or as listed: relative to DIR): their config "
                        "differences and metrics side by side")
    parser.add_argument("--plot", type=Path, metavar="PATH",
                        help="with --compare: also draw both runs' train/loss and monitored metric per epoch "
                        "to PATH (a PNG), as a sweep's sweep_curves.png")
    parser.add_argument("-n", "--limit", type=int, default=30, help="show the newest N runs (default 30; 0: all)")
    args = parser.parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)  # lines stay whole in logs and pipes; tables still fit
    try:
        if args.plot is not None and not args.compare:
            raise RunsError("--plot PATH draws the runs of --compare A B: give both, e.g. trainkit runs --compare "
                            "A B --plot curves.png.")
        if args.compare:
            return compare(console, *args.compare, args.dir, args.plot)
        return list_runs(console, args.dir, args.limit)
    except UserError as err:
        console.print("[bold red]error:[/bold red] ", end="")
        console.print(str(err), markup=False)
        return 1
