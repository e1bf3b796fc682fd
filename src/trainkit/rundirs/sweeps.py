"""A sweep's directory (`trainkit train -m ...`): its summary at the end (sweep_summary.csv, sweep_curves.png and the
table, best job first; a sweep with a job that did not finish exits 1), a failed job's row, and the plan of a
stopped sweep's jobs for `trainkit sweep resume`. It reads what each job wrote (read.py); training knows none of it.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from trainkit.errors import UserError
from trainkit.logging.text import number
from trainkit.rundirs.claim import job_dir_name, job_number
from trainkit.rundirs.read import Run, best_cell, overrides_of, read_run, run_row, status_cell

SUMMARY_FILE = "sweep_summary.csv"
CURVES_FILE = "sweep_curves.png"  # each job's train/loss and monitored metric per epoch (curves.py)



def report(sweep_dir: Path, console: Console) -> int:
    """`summarize`, then name the jobs that did not finish (on standard error); returns the sweep's exit code (1 if
    there are any)."""
    runs = summarize(sweep_dir, console)
    unfinished = [r for r in runs if r.status != "finished"]
    if not unfinished:
        return 0
    jobs = ", ".join(job_number(r.path) for r in unfinished)
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]error:[/bold red] {len(unfinished)} of {len(runs)} jobs did not finish (job {jobs}): why is said "
        f"above.")
    if any(r.status in ("interrupted", "crashed") for r in unfinished):  # a job's own hint resumes it alone
        console.print(f"finish the whole sweep (stopped jobs resume from their checkpoints): trainkit sweep resume "
                      f"{sweep_dir}", markup=False, highlight=False)
    return 1


def job_dirs(sweep_dir: Path) -> list[Path]:
    dirs = [p for p in sweep_dir.iterdir() if (p / ".hydra" / "config.yaml").is_file()] if sweep_dir.is_dir() else []
    return sorted(dirs, key=lambda p: (int(job_number(p)) if job_number(p).isdigit() else 1 << 30, p.name))


def _sort_key(run: Run) -> tuple:
    if run.status != "finished" or run.best_value is None:
        return (1, "", 0.0)
    return (0, run.monitor, -run.best_value if run.maximize else run.best_value)


def summarize(sweep_dir: Path, console: Console) -> list[Run]:
    """Write sweep_summary.csv and sweep_curves.png and print the table, best job first; returns the jobs in
    that order."""
    runs = sorted((read_run(p) for p in job_dirs(sweep_dir)), key=_sort_key)
    write_csv(sweep_dir / SUMMARY_FILE, runs)
    print_table(console, sweep_dir, runs)
    if runs:
        from trainkit.rundirs import curves

        by_job = sorted(runs, key=lambda r: int(job_number(r.path)) if job_number(r.path).isdigit() else 1 << 30)
        drawn = curves.draw(by_job, sweep_dir / CURVES_FILE, title=f"sweep {sweep_dir.name}: {len(runs)} jobs")
        if drawn is not None:
            console.print(f"curves: {drawn}", markup=False, highlight=False)
    return runs


def write_csv(path: Path, runs: list[Run]) -> None:
    """One row per job: job, overrides, status, the monitored metric's best, then one column per override key,
    `final:<metric>` and `best:<metric>` (the best epoch's row), the test metrics, the error and the directory."""
    rows = [{"job": job_number(run.path), **run_row(run)} for run in runs]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    columns = [c for c in columns if c not in ("error", "path")] + ["error", "path"]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:  # floats at full precision, as in metrics.csv
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    os.replace(tmp, path)


def print_table(console: Console, sweep_dir: Path, runs: list[Run]) -> None:
    if not runs:
        console.print(f"sweep {sweep_dir}: no job directories.", markup=False)
        return
    common = [o for o in runs[0].overrides if all(o in r.overrides for r in runs)]
    monitors = {r.monitor for r in runs if r.monitor}
    monitor = next(iter(monitors)) if len(monitors) == 1 else ""
    test_key = "test/" + monitor.split("/", 1)[1] if monitor.startswith("val/") else ""
    show_test = bool(test_key) and any(test_key in (r.summary.get("test") or {}) for r in runs)
    finished = sum(r.status == "finished" for r in runs)
    order = f", best first by {monitor} ({'max' if runs[0].maximize else 'min'})" if monitor else ""
    table = Table(title=f"sweep: {len(runs)} jobs, {finished} finished{order}", caption_justify="left",
                  caption=f"common to all jobs: {' '.join(common)}" if common else None)
    table.add_column("job", justify="right")
    varying = {job_number(r.path): [o for o in r.overrides if o not in common] for r in runs}
    widest = max((len(o) for v in varying.values() for o in v), default=9)
    table.add_column("overrides", overflow="fold", min_width=min(widest, 40))  # one per line, whole
    table.add_column("status", no_wrap=True)
    table.add_column(f"best {monitor}" if monitor else "best", justify="right", no_wrap=True)
    if show_test:
        table.add_column(test_key, justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("time (s)", justify="right")
    for run in runs:
        cells = [job_number(run.path), "\n".join(varying[job_number(run.path)]), status_cell(run),
                 best_cell(run, with_name=not monitor)]
        if show_test:
            cells.append(number((run.summary.get("test") or {}).get(test_key)))
        wall = run.summary.get("wall_time_s")
        cells += [str(run.epochs), f"{wall:.1f}" if isinstance(wall, (int, float)) else ""]
        table.add_row(*cells)
    console.print(table)
    for run in runs:  # under the table, whole: an error is a paragraph, too long for a cell
        if run.error:
            console.print(f"job {job_number(run.path)} {run.status}: {run.error}", markup=False, highlight=False)
    if runs[0].status == "finished" and runs[0].best_value is not None:
        console.print(_best_line(runs, " ".join(varying[job_number(runs[0].path)])), markup=False, highlight=False)
    console.print(f"summary: {sweep_dir / SUMMARY_FILE}    compare the jobs: tensorboard --logdir {sweep_dir}",
                  markup=False, highlight=False)


def _best_line(runs: list[Run], overrides: str) -> str:
    """Which job won, and by how much over the next one."""
    best = runs[0]
    line = f"best: job {job_number(best.path)} ({overrides or 'defaults'}), {best.monitor} {number(best.best_value)} at epoch " \
           f"{best.summary.get('best_epoch')}"
    second = runs[1] if len(runs) > 1 else None
    if second is not None and second.best_value is not None and second.monitor == best.monitor:
        gap = abs(best.best_value - second.best_value)  # type: ignore[operator]
        relative = f" ({gap / abs(second.best_value):.1%})" if second.best_value else ""
        line += f", ahead of job {job_number(second.path)} by {number(gap)}{relative}"
    return f"{line}: {best.path}"


def record_failure(run_dir: Path, error: str) -> None:
    """A job that failed before `train` wrote its summary.json gets one that says why, so its row has the error."""
    path = run_dir / "summary.json"
    if path.exists():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"status": "failed", "run_dir": str(run_dir), "error": error}, indent=2) + "\n")
    os.replace(tmp, path)


# --- a stopped sweep's plan (`trainkit sweep resume`) ----------------------------------------------------------
class SweepResumeError(UserError):
    """A directory given to `trainkit sweep resume` that is not a sweep it can finish."""


@dataclass
class Job:
    num: int
    overrides: list[str]  # the job's own overrides, as Hydra hands them to it
    dir: Path
    status: str  # finished, failed, interrupted, crashed, running, or "not started"


def multirun_config(sweep_dir: Path) -> dict:
    """DIR/multirun.yaml, which Hydra writes when a sweep starts: the sweep's command line and settings. A directory
    that is not a sweep's, or a multirun.yaml that cannot be read as one, is a SweepResumeError that says so."""
    path = sweep_dir / "multirun.yaml"
    if not sweep_dir.is_dir():
        raise SweepResumeError(f"{sweep_dir} is not a directory: give the sweep's directory, which the sweep's table "
                               f"named (outputs/multirun/<date>/<time>).")
    if not path.is_file():
        raise SweepResumeError(f"{sweep_dir} is not a sweep directory: it has no multirun.yaml, which Hydra writes "
                               f"when `trainkit train -m ...` starts. Give the directory that the sweep's table named "
                               f"(outputs/multirun/<date>/<time>).")
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise sweep_damaged(path, " ".join(str(exc).split())[:200]) from None
    if config is None:
        config = {}
    if not isinstance(config, dict) or not isinstance(config.get("hydra", {}), dict):
        raise sweep_damaged(path, "it is not a mapping with a hydra: section")
    return config


def sweep_damaged(path: Path, why: str) -> SweepResumeError:
    return SweepResumeError(f"{path} is damaged ({why}), so the sweep's jobs cannot be worked out again. Each job's "
                            f"directory keeps its own overrides (.hydra/overrides.yaml): finish a stopped job alone "
                            f"with `trainkit train OVERRIDES resume=JOB_DIR`, or start the sweep again.")


def sweep_overrides(sweep_dir: Path, config: dict, part: str = "task") -> list[str]:
    """The sweep's overrides as typed (`task`: the command's; `hydra`: Hydra's own), from its multirun.yaml."""
    overrides = (config.get("hydra") or {}).get("overrides") or {}
    found = overrides.get(part) if isinstance(overrides, dict) else None
    if found is None:
        return []
    if not isinstance(found, list) or not all(isinstance(o, (str, int, float, bool)) for o in found):
        raise sweep_damaged(sweep_dir / "multirun.yaml", f"hydra.overrides.{part} is not a list of overrides")
    return [str(o) for o in found]


def plan(sweep_dir: Path) -> list[Job]:
    """Every job of the sweep in DIR, in Hydra's order, with its directory and what that directory says."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    config = multirun_config(sweep_dir)
    hydra = config.get("hydra") or {}
    task = sweep_overrides(sweep_dir, config)
    parser = OverridesParser.create()
    job_config = hydra.get("job") if isinstance(hydra.get("job"), dict) else {}
    naming = ((job_config.get("config") or {}) if isinstance(job_config.get("config"), dict) else {}).get(
        "override_dirname") or {}
    naming = naming if isinstance(naming, dict) else {}
    try:
        (batch,) = BasicSweeper.split_arguments(parser.parse_overrides(task), None)
        dirnames = [get_overrides_dirname(parser.parse_overrides(o), list(naming.get("exclude_keys") or []),
                                          str(naming.get("item_sep", ",")), str(naming.get("kv_sep", "=")))
                    for o in batch]
    except (HydraException, ValueError, TypeError) as exc:
        said = " ".join(str(exc).split("See https://")[0].split())[:200]
        raise sweep_damaged(sweep_dir / "multirun.yaml", f"its overrides cannot be read: {said}") from None
    existing = {job_number(p): p for p in job_dirs(sweep_dir)}
    jobs = []
    for num, (overrides, dirname) in enumerate(zip(batch, dirnames)):
        found = existing.get(str(num))
        if found is None:
            target = sweep_dir / job_dir_name(num, dirname)
            if target.exists() and not target.is_dir():
                raise SweepResumeError(f"{target} is a file where job {num}'s directory goes: move it away, then "
                                       f"resume again.")
            jobs.append(Job(num, list(overrides), target, "not started"))
            continue
        typed = overrides_of(found)
        if typed and typed != list(overrides):
            raise SweepResumeError(f"job {num}'s directory {found} says it ran with {' '.join(typed)}, but the sweep "
                                   f"in {sweep_dir / 'multirun.yaml'} gives job {num} {' '.join(overrides)}: one of "
                                   f"the two was edited, so the sweep cannot be resumed as it is. Finish that job "
                                   f"alone (trainkit train OVERRIDES resume={found}), or start the sweep again.")
        jobs.append(Job(num, list(overrides), found, read_run(found).status))
    return jobs
