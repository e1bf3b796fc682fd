"""`trainkit sweep resume DIR`: finish a sweep (`trainkit train -m ...`) that was stopped.

The sweep's jobs are worked out again from what Hydra saved in DIR/multirun.yaml (its overrides, expanded as Hydra's
basic sweeper does, so job N is the same job). Each job then goes by what its directory says: finished jobs are left
alone and keep their rows; an interrupted (or killed) job with a checkpoint resumes from it, exactly, with
`trainkit train ... resume=JOBDIR`; a job that never started runs in the directory the sweep would have given it;
a failed job runs again, from scratch, only with --retry-failed. Every job runs as its own `trainkit train` process,
and sweep_summary.csv, sweep_curves.png and the table then cover every job (trainkit.rundirs.sweeps.report).
An Optuna search (hparams_search=...) is continued by its own command line, run again in DIR: its sweeper
(trainkit.rundirs.search) loads the study kept there and goes on until n_trials trials have finished.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from trainkit.rundirs.claim import quoted
from trainkit.rundirs.sweeps import Job, SweepResumeError, multirun_config, plan, report

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
SEARCH_SWEEPER = "hydra_plugins.trainkit_optuna.OptunaSweeper"  # trainkit.rundirs.search


def _command(job: Job, sweep_dir: Path, retry_failed: bool) -> list[str] | None:
    """The `trainkit train` line that finishes `job`, or None when it is left as it is."""
    last = job.dir / "checkpoints" / "last.ckpt"
    base = list(job.overrides)
    if job.status == "finished" or job.status == "running" or (job.status == "failed" and not retry_failed):
        return None
    if job.status in ("interrupted", "crashed") and last.is_file():
        # A resume runs in a directory of its own that `train` folds back into the job's (rundirs.adopt).
        scratch = sweep_dir / ".resume" / str(job.num)
        return [*base, f"resume={quoted(job.dir)}", f"hydra.run.dir={quoted(scratch)}"]
    if job.dir.exists():  # failed (retried), or stopped before its first checkpoint: from scratch, same place
        shutil.rmtree(job.dir)
    return [*base, f"hydra.run.dir={quoted(job.dir)}"]


def _sweeper(sweep_dir: Path) -> str:
    hydra = multirun_config(sweep_dir).get("hydra") or {}
    sweeper = str((hydra.get("sweeper") or {}).get("_target_", BASIC_SWEEPER))
    if sweeper not in (BASIC_SWEEPER, SEARCH_SWEEPER):
        raise SweepResumeError(f"{sweep_dir} was run by {sweeper.rsplit('.', 1)[-1]}: `trainkit sweep resume` "
                               f"finishes grid sweeps (-m key=a,b,...) and trainkit's Optuna searches "
                               f"(hparams_search=...) only. Start that sweep again with the same command.")
    return sweeper


def resume_search(sweep_dir: Path, retry_failed: bool, console: Console) -> int:
    """Run the search's own command line again in its directory: the sweeper (trainkit.rundirs.search) loads the study from
    there, finishes the trials that were stopped, and runs new ones until n_trials have finished."""
    hydra = multirun_config(sweep_dir).get("hydra") or {}
    if retry_failed:
        raise SweepResumeError(f"{sweep_dir} is an Optuna search: its failed trials are results that the sampler "
                               f"learns from and that count toward n_trials, so they are not run again. Resume it "
                               f"without --retry-failed.")
    overrides = hydra.get("overrides") or {}
    kept = [str(o) for o in overrides.get("hydra") or [] if not str(o).startswith(("hydra.sweep.dir=", "hydra.mode="))]
    line = [*[str(o) for o in overrides.get("task") or []], *kept]
    console.print(f"search {sweep_dir}: continuing its study: trainkit train -m {' '.join(line)}", markup=False)
    return subprocess.call([sys.executable, "-m", "trainkit", "train", "-m", *line,
                            f"hydra.sweep.dir={quoted(sweep_dir)}"])


def resume(sweep_dir: Path, retry_failed: bool, console: Console) -> int:
    sweep_dir = Path(sweep_dir)
    if _sweeper(sweep_dir) == SEARCH_SWEEPER:
        return resume_search(sweep_dir, retry_failed, console)
    jobs = plan(sweep_dir)
    counts = {s: sum(j.status == s for j in jobs) for s in dict.fromkeys(j.status for j in jobs)}
    console.print(f"sweep {sweep_dir}: {len(jobs)} jobs (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")",
                  markup=False)
    for job in jobs:
        line = _command(job, sweep_dir, retry_failed)
        if line is None:
            why = " (--retry-failed runs it again)" if job.status == "failed" else ""
            console.print(f"job {job.num}: {job.status}, kept{why}", markup=False)
            continue
        verb = "resuming" if any(a.startswith("resume=") for a in line) else "running"
        console.print(f"job {job.num}: {job.status}, {verb}: trainkit train {' '.join(job.overrides)}", markup=False)
        code = subprocess.call([sys.executable, "-m", "trainkit", "train", *line])
        if code in (130, 143):  # stopped again: what ran is summarised, and the same command goes on later
            console.print(f"stopped during job {job.num}: `trainkit sweep resume {sweep_dir}` goes on from here.",
                          markup=False)
            report(sweep_dir, console)
            return code
    shutil.rmtree(sweep_dir / ".resume", ignore_errors=True)
    return report(sweep_dir, console)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="trainkit sweep resume", description="Finish a stopped sweep (trainkit train -m ...): finished jobs are "
        "kept, interrupted jobs resume from their checkpoints, jobs never started run; then the summary covers all.")
    parser.add_argument("dir", type=Path, help="the sweep directory (outputs/multirun/<date>/<time>)")
    parser.add_argument("--retry-failed", action="store_true", help="also run the failed jobs again, from scratch")
    args = parser.parse_args(argv)
    return resume(args.dir, args.retry_failed, Console(highlight=False, soft_wrap=True))
