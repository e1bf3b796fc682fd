"""Sweeps (`trainkit train -m ...`): what happens around the jobs, not in them.

At the end of a multirun, `SweepSummary` (a Hydra callback named in configs/train.yaml) writes sweep_summary.csv in
the sweep directory, one row per job, and sweep_curves.png, and prints the rows as a table sorted by the monitored metric; a sweep with a job
that did not finish exits 1. It reads what each job wrote (trainkit.commands.runs.read_run). Jobs launched side by
side (hydra/launcher=joblib) each get a fair share of the CPU threads. Training itself knows none of this.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from trainkit.commands.runs import Run, best_cell, read_run, status_cell
from trainkit.logging.text import number
from trainkit.rundirs import job_number

log = logging.getLogger(__name__)
SUMMARY_FILE = "sweep_summary.csv"
CURVES_FILE = "sweep_curves.png"  # each job's train/loss and monitored metric per epoch (trainkit.curves)



class SweepSummary(Callback):
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        share_threads(config)

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        """sweep.fail_fast=true: a job that did not finish stops the sweep (the jobs so far are summarised)."""
        if not OmegaConf.select(config, "sweep.fail_fast", default=False):
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        if not job_dir.is_dir():  # a resumed search trial: `train` moved on into its own job directory
            return
        run = read_run(job_dir)
        if run.status in ("finished", "running"):
            return
        Console(highlight=False, soft_wrap=True).print(
            f"[bold red]error:[/bold red] job {config.hydra.job.num} {run.status} and sweep.fail_fast=true: the "
            f"sweep stops here (sweep.fail_fast=false runs the other jobs on).")
        raise SystemExit(1)  # not an Exception: Hydra's callbacks runner would only warn; the CLI summarises

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        code = report(Path(config.hydra.sweep.dir), Console(highlight=False, soft_wrap=True))
        if code:
            raise SystemExit(code)  # Hydra's callbacks runner would turn an Exception into a mere warning


def report(sweep_dir: Path, console: Console) -> int:
    """`summarize`, then name the jobs that did not finish; returns the sweep's exit code (1 if there are any)."""
    runs = summarize(sweep_dir, console)
    unfinished = [r for r in runs if r.status != "finished"]
    if not unfinished:
        return 0
    jobs = ", ".join(job_number(r.path) for r in unfinished)
    console.print(f"[bold red]error:[/bold red] {len(unfinished)} of {len(runs)} jobs did not finish (job {jobs}): "
                  f"why is said above.", highlight=False)
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
        from trainkit import curves

        by_job = sorted(runs, key=lambda r: int(job_number(r.path)) if job_number(r.path).isdigit() else 1 << 30)
        drawn = curves.draw(by_job, sweep_dir / CURVES_FILE, title=f"sweep {sweep_dir.name}: {len(runs)} jobs")
        if drawn is not None:
            console.print(f"curves: {drawn}", markup=False, highlight=False)
    return runs


def _param(override: str) -> tuple[str, str]:
    key, _, value = override.lstrip("+~").partition("=")
    return key, value


def write_csv(path: Path, runs: list[Run]) -> None:
    """One row per job: job, overrides, status, the monitored metric's best, then one column per override key,
    `final:<metric>` and `best:<metric>` (the best epoch's row), the test metrics, the error and the directory."""
    rows = []
    for run in runs:
        s = run.summary
        row: dict[str, Any] = {
            "job": job_number(run.path), "overrides": " ".join(run.overrides), "status": run.status,
            "monitor": run.monitor, "best_value": run.best_value, "best_epoch": s.get("best_epoch"),
            "epochs": run.epochs, "wall_time_s": s.get("wall_time_s"),
        }
        row.update(_param(o) for o in run.overrides)
        for prefix, metrics in (("final:", s.get("final") or {}), ("best:", s.get("best") or {})):
            row.update({prefix + k: v for k, v in metrics.items() if k not in ("epoch", "step")})
        row.update(s.get("test") or {})
        row.update({"error": run.error, "path": str(run.path)})
        rows.append(row)
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


def share_threads(config: DictConfig) -> None:
    """Jobs run side by side by the joblib launcher share the CPU: each gets cpu_count // n_jobs torch threads
    (at least 1), unless trainer.num_threads says otherwise."""
    launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    if "joblib" not in launcher or OmegaConf.select(config, "trainer.num_threads", default=None) is not None:
        return
    import joblib
    import torch

    n_jobs = joblib.effective_n_jobs(OmegaConf.select(config, "hydra.launcher.n_jobs", default=-1))
    threads = max(1, joblib.cpu_count() // max(1, n_jobs))
    torch.set_num_threads(threads)
    log.info("torch threads: %d (%d CPUs shared by %d parallel jobs)", threads, joblib.cpu_count(), n_jobs)
