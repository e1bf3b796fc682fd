"""`trainkit runs [DIR]` lists past training runs, newest first; `trainkit runs --compare A B` sets two side by side
(`--plot PATH`: and draws their curves). What a run directory says is read by trainkit.rundirs.read.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from trainkit.errors import UsageError
from trainkit.logging.text import number, shown
from trainkit.rundirs import remote
from trainkit.rundirs.read import (
    Run,
    RunsError,
    best_cell,
    epochs_cell,
    find_runs,
    metric_rows,
    read_run,
    run_dir_of,
    status_cell,
    stored_config,
)
from trainkit.rundirs.resume import config_diff
from trainkit.storage import url_of


def list_runs(console: Console, root: Path, limit: int) -> int:
    if not root.is_dir():
        raise RunsError(f"{root} is not a directory: run `trainkit runs` where you ran `trainkit train` (its runs "
                        f"are in outputs/ there), or give the folder they are in: trainkit runs DIR.")
    runs = find_runs(root)
    where = url_of(root) or root  # a URL's local copy is shown as the URL
    if not runs:
        console.print(f"no training runs under {where}: `trainkit train` writes them to outputs/<date>/<time>/ and "
                      f"sweep jobs to outputs/multirun/<date>/<time>/<n>_<overrides>/.", markup=False)
        return 0
    shown = runs if limit <= 0 else runs[:limit]
    monitors = {r.monitor for r in shown if r.monitor}
    shared = next(iter(monitors)) if len(monitors) == 1 else ""  # then named once, in the header
    common = [o for o in shown[0].overrides if all(o in r.overrides for r in shown)] if len(shown) > 1 else []
    table = Table(title=f"trainkit runs under {where}/: {len(runs)}, newest first", box=box.SIMPLE_HEAD,
                  show_edge=False, caption=f"common to all: {' '.join(common)}" if common else None,
                  caption_justify="left")
    wide = console.width >= 110  # narrower: the run's path (<date>/<time>) says when it started
    if wide:
        table.add_column("started", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column(f"best\n{shared}" if shared else "best", justify="right", no_wrap=bool(shared))
    table.add_column("epochs", justify="right", no_wrap=True)
    table.add_column(f"run (in {where}/)", overflow="fold", ratio=1)  # sweep jobs: long <n>_<overrides> names
    table.add_column("overrides", overflow="fold", min_width=16, ratio=1)
    for run in shown:
        overrides = " ".join(o for o in run.overrides if o not in common) or ("(defaults)" if not run.overrides else "")
        cells = [status_cell(run), best_cell(run, with_name=not shared), epochs_cell(run), _under(run.path, root),
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


def _metrics(run: Run) -> dict[str, float]:
    """Final metrics, then test metrics; a run without a summary shows its last metrics.csv row."""
    final = dict(run.summary.get("final") or {})
    if not final:
        rows = metric_rows(run.path / "metrics.csv")
        final = {k: float(v) for k, v in (rows[-1] if rows else {}).items() if v not in ("", None)}
    shown = {f"final {k}": v for k, v in final.items() if k not in ("epoch", "step")}
    shown.update(run.summary.get("test") or {})
    return shown


def compare(console: Console, a_spec: str, b_spec: str, root: Path, plot: Path | None = None) -> int:
    a, b = read_run(run_dir_of(a_spec, root)), read_run(run_dir_of(b_spec, root))
    for label, run in (("A", a), ("B", b)):
        console.print(f"[bold]{label}[/bold] {shown(run.path)}  {status_cell(run)}  "
                      f"{' '.join(run.overrides) or '(defaults)'}", highlight=False)
        if run.error:
            console.print(f"  {run.error}", markup=False, highlight=False)
    diff = config_diff(stored_config(a.path), stored_config(b.path))
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
    table.add_row("epochs", epochs_cell(a), epochs_cell(b), "")
    ma, mb = _metrics(a), _metrics(b)
    for key in [*ma, *(k for k in mb if k not in ma)]:
        table.add_row(key, number(ma.get(key)), number(mb.get(key)), _delta(ma.get(key), mb.get(key)))
    wa, wb = a.summary.get("wall_time_s"), b.summary.get("wall_time_s")
    table.add_row("wall time (s)", number(wa), number(wb), _delta(wa, wb))
    console.print(table)
    if plot is not None:
        from trainkit.rundirs import curves

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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one paragraph on standard error, exit 2, as every usage error
        raise UsageError(f"trainkit runs: {message}. Usage: trainkit runs [DIR] [-n N] [--compare A B [--plot PATH]].")


def main(argv: list[str]) -> int:
    parser = _Parser(
        prog="trainkit runs", description="List past training runs (newest first), or compare two. It reads the "
        "files every run writes; nothing else is kept.")
    parser.add_argument("dir", nargs="?", default="outputs",
                        help="where to look for runs, single runs and sweep jobs alike (default: outputs); or a URL "
                        "in object storage, e.g. s3://bucket/outputs")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"),
                        help="two run directories (as given, or as listed: relative to DIR): their config "
                        "differences and metrics side by side")
    parser.add_argument("--plot", type=Path, metavar="PATH",
                        help="with --compare: also draw both runs' train/loss and monitored metric per epoch "
                        "to PATH (a PNG), as a sweep's sweep_curves.png")
    parser.add_argument("-n", "--limit", type=int, default=30, help="show the newest N runs (default 30; 0: all)")
    args = parser.parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)  # lines stay whole in logs and pipes; tables still fit
    if args.plot is not None and not args.compare:
        raise RunsError("--plot PATH draws the runs of --compare A B: give both, e.g. trainkit runs --compare "
                        "A B --plot curves.png.")
    root = remote.readable(args.dir) if remote.is_url(args.dir) else Path(args.dir)
    if args.compare:
        return compare(console, *args.compare, root, args.plot)
    return list_runs(console, root, args.limit)
