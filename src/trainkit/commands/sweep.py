"""`trainkit sweep resume DIR`: finish a sweep (`trainkit train -m ...`) that was stopped.

The sweep's jobs are worked out again from what Hydra saved in DIR/multirun.yaml (its overrides, expanded as Hydra's
basic sweeper does, so job N is the same job). Each job then goes by what its directory says: finished jobs are left
alone and keep their rows; an interrupted (or killed) job with a checkpoint resumes from it, exactly, with
`trainkit train ... resume=JOBDIR`; a job that never started runs in the directory the sweep would have given it;
a failed job runs again, from scratch, only with --retry-failed. Every job runs as its own `trainkit train` process,
and sweep_summary.csv, sweep_curves.png and the table then cover every job (trainkit.sweep.report).
An Optuna search (hparams_search=...) is continued by its own command line, run again in DIR: its sweeper
(trainkit.search) loads the study kept there and goes on until n_trials trials have finished.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console

from trainkit.errors import UserError

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
SEARCH_SWEEPER = "hydra_plugins.trainkit_optuna.OptunaSweeper"  # trainkit.search


class SweepResumeError(UserError):
    """A directory given to `trainkit sweep resume` that is not a sweep it can finish."""


@dataclass
class Job:
    num: int
    overrides: list[str]  # the job's own overrides, as Hydra hands them to it
    dir: Path
    status: str  # finished, failed, interrupted, crashed, running, or "not started"


def _multirun(sweep_dir: Path) -> dict:
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        raise SweepResumeError(f"{sweep_dir} is not a sweep directory: it has no multirun.yaml, which Hydra writes "
                               f"when `trainkit train -m ...` starts. Give the directory that the sweep's table named "
                               f"(outputs/multirun/<date>/<time>).")
    return yaml.safe_load(path.read_text()) or {}


def plan(sweep_dir: Path) -> list[Job]:
    """Every job of the sweep in DIR, in Hydra's order, with its directory and what that directory says."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from trainkit.commands.runs import read_run
    from trainkit.rundirs import job_dir_name, job_number
    from trainkit.sweep import job_dirs

    hydra = _multirun(sweep_dir).get("hydra") or {}
    task = [str(o) for o in (hydra.get("overrides") or {}).get("task") or []]
    parser = OverridesParser.create()
    (batch,) = BasicSweeper.split_arguments(parser.parse_overrides(task), None)
    naming = (hydra.get("job") or {}).get("config", {}).get("override_dirname", {})
    existing = {job_number(p): p for p in job_dirs(sweep_dir)}
    jobs = []
    for num, overrides in enumerate(batch):
        found = existing.get(str(num))
        if found is None:
            dirname = get_overrides_dirname(parser.parse_overrides(overrides), naming.get("exclude_keys") or [],
                                            naming.get("item_sep", ","), naming.get("kv_sep", "="))
            jobs.append(Job(num, overrides, sweep_dir / job_dir_name(num, dirname), "not started"))
        else:
            jobs.append(Job(num, overrides, found, read_run(found).status))
    return jobs


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


def quoted(path: Path) -> str:
    """A path as one Hydra override value: job directories have `=` and `,` in their names."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sweeper(sweep_dir: Path) -> str:
    hydra = _multirun(sweep_dir).get("hydra") or {}
    sweeper = str((hydra.get("sweeper") or {}).get("_target_", BASIC_SWEEPER))
    if sweeper not in (BASIC_SWEEPER, SEARCH_SWEEPER):
        raise SweepResumeError(f"{sweep_dir} was run by {sweeper.rsplit('.', 1)[-1]}: `trainkit sweep resume` "
                               f"finishes grid sweeps (-m key=a,b,...) and trainkit's Optuna searches "
                               f"(hparams_search=...) only. Start that sweep again with the same command.")
    return sweeper


def resume_search(sweep_dir: Path, retry_failed: bool, console: Console) -> int:
    """Run the search's own command line again in its directory: the sweeper (trainkit.search) loads the study from
    there, finishes the trials that were stopped, and runs new ones until n_trials have finished."""
    hydra = _multirun(sweep_dir).get("hydra") or {}
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
    from trainkit.sweep import report

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
    console = Console(highlight=False, soft_wrap=True)
    try:
        return resume(args.dir, args.retry_failed, console)
    except UserError as err:
        console.print("[bold red]error:[/bold red] ", end="")
        console.print(str(err), markup=False)
        return 1
