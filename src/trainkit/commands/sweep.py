"""`trainkit sweep resume DIR`: finish a sweep (`trainkit train -m ...`) that was stopped.

The sweep's jobs are worked out again from what Hydra saved in DIR/multirun.yaml (its overrides, expanded as Hydra's
basic sweeper does, so job N is the same job). Each job then goes by what its directory says: finished jobs are left
alone and keep their rows; an interrupted (or killed) job with a checkpoint resumes from it, exactly, with
`trainkit train ... resume=JOBDIR`; a job that never started runs in the directory the sweep would have given it;
a failed job runs again, from scratch, only with --retry-failed. Every job runs as its own `trainkit train` process
(a sweep that ran on Ray, hydra/launcher=ray, runs them as Ray tasks again, side by side), and sweep_summary.csv,
sweep_curves.png and the table then cover every job (trainkit.rundirs.sweeps.report).
An Optuna search (hparams_search=...) is continued by its own command line, run again in DIR: its sweeper
(trainkit.rundirs.search) loads the study kept there and goes on until n_trials trials have finished.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from trainkit.errors import UsageError
from trainkit.rundirs import remote
from trainkit.rundirs.claim import quoted
from trainkit.rundirs.sweeps import Job, SweepResumeError, multirun_config, plan, report, sweep_damaged, sweep_overrides

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
SEARCH_SWEEPER = "hydra_plugins.trainkit_optuna.OptunaSweeper"  # trainkit.rundirs.search
RAY_LAUNCHER = "hydra_plugins.trainkit_ray.RayLauncher"  # hydra/launcher=ray: a resumed sweep's jobs run on Ray too


def _command(job: Job, sweep_dir: Path, retry_failed: bool) -> list[str] | None:
    """The `trainkit train` line that finishes `job`, or None when it is left as it is. Nothing is changed yet."""
    last = job.dir / "checkpoints" / "last.ckpt"
    base = list(job.overrides)
    if job.status == "finished" or job.status == "running" or (job.status == "failed" and not retry_failed):
        return None
    if job.status in ("interrupted", "crashed") and last.is_file():
        # A resume runs in a directory of its own that `train` folds back into the job's (rundirs.adopt).
        scratch = sweep_dir / ".resume" / str(job.num)
        return [*base, f"resume={quoted(job.dir)}", f"hydra.run.dir={quoted(scratch)}"]
    return [*base, f"hydra.run.dir={quoted(job.dir)}"]  # failed (retried), or stopped before its first checkpoint


def _sweeper(sweep_dir: Path, config: dict) -> str:
    sweeper_node = (config.get("hydra") or {}).get("sweeper") or {}
    if not isinstance(sweeper_node, dict):
        raise sweep_damaged(sweep_dir / "multirun.yaml", "hydra.sweeper is not a mapping")
    sweeper = str(sweeper_node.get("_target_", BASIC_SWEEPER))
    if sweeper not in (BASIC_SWEEPER, SEARCH_SWEEPER):
        raise SweepResumeError(f"{sweep_dir} was run by {sweeper.rsplit('.', 1)[-1]}: `trainkit sweep resume` "
                               f"finishes grid sweeps (-m key=a,b,...) and trainkit's Optuna searches "
                               f"(hparams_search=...) only. Start that sweep again with the same command.")
    return sweeper


def require_plugins(sweep_dir: Path, overrides: list[str], named: list[str]) -> None:
    """A sweep directory never loads code by itself: the plugin modules its jobs name (plugins=[...] in its
    multirun.yaml) must be named again on the resume's line."""
    stored = []
    for override in overrides:
        key, eq, value = override.lstrip("+~").partition("=")
        if key == "plugins" and eq:
            stored += [m.strip().strip("'\"") for m in value.strip("[]").split(",") if m.strip()]
    missing = [m for m in dict.fromkeys(stored) if m not in named]
    if missing:
        listed = ",".join(dict.fromkeys([*named, *stored]))
        raise SweepResumeError(f"{sweep_dir}'s jobs load the plugin module{'s' * (len(missing) > 1)} "
                               f"{', '.join(missing)} (plugins= in its multirun.yaml), and a sweep directory never "
                               f"loads code by itself. If you trust {'them' if len(missing) > 1 else 'it'}, name "
                               f"{'them' if len(missing) > 1 else 'it'}: trainkit sweep resume {sweep_dir} "
                               f"plugins=[{listed}]")


def resume_search(sweep_dir: Path, config: dict, retry_failed: bool, console: Console) -> int:
    """Run the search's own command line again in its directory: the sweeper (trainkit.rundirs.search) loads the study from
    there, finishes the trials that were stopped, and runs new ones until n_trials have finished."""
    if retry_failed:
        raise SweepResumeError(f"{sweep_dir} is an Optuna search: its failed trials are results that the sampler "
                               f"learns from and that count toward n_trials, so they are not run again. Resume it "
                               f"without --retry-failed.")
    line = [*sweep_overrides(sweep_dir, config), *_kept_hydra(sweep_dir, config)]
    said = check_line(["-m", *line])
    if said is not None:
        raise SweepResumeError(f"{sweep_dir}'s search cannot go on as its multirun.yaml stores it, so no trial was "
                               f"started: {said}")
    console.print(f"search {sweep_dir}: continuing its study: trainkit train -m {' '.join(line)}", markup=False)
    return run_line(["-m", *line, f"hydra.sweep.dir={quoted(sweep_dir)}"])


def _kept_hydra(sweep_dir: Path, config: dict) -> list[str]:
    """The sweep's own hydra.* overrides that its jobs run with again (not its directory or mode)."""
    return [o for o in sweep_overrides(sweep_dir, config, "hydra") if not o.startswith(("hydra.sweep.dir=",
                                                                                         "hydra.mode="))]


def check_line(args: list[str]) -> str | None:
    """`trainkit train ARGS --check` in a process of its own: every job of the sweep composed and checked, nothing
    run. Its error paragraph, or None when the line is fine."""
    proc = subprocess.run([sys.executable, "-m", "trainkit", "train", *args, "--check"], capture_output=True,
                          text=True, errors="backslashreplace", check=False)
    if proc.returncode == 0:
        return None
    said = " ".join(proc.stderr.split()).removeprefix("error: ")
    return said or f"trainkit train exited {proc.returncode}"


def run_line(args: list[str]) -> int:
    """`trainkit train ARGS` as a process of its own, in a session of its own: a signal (Ctrl-C in the terminal,
    SIGTERM) reaches this process only and is passed on once, so that the job stops as a stopped run does (it saves
    and exits 130 or 143), and this one then summarises the sweep."""
    child = subprocess.Popen([sys.executable, "-m", "trainkit", "train", *args], start_new_session=True)

    def forward(signum: int, frame: Any) -> None:
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def resume(sweep_dir: Path, retry_failed: bool, console: Console, plugins: list[str] = ()) -> int:
    sweep_dir = Path(sweep_dir)
    config = multirun_config(sweep_dir)
    overrides = sweep_overrides(sweep_dir, config)
    require_plugins(sweep_dir, overrides, list(plugins))
    if _sweeper(sweep_dir, config) == SEARCH_SWEEPER:
        return resume_search(sweep_dir, config, retry_failed, console)
    jobs = plan(sweep_dir)
    lines = [(job, _command(job, sweep_dir, retry_failed)) for job in jobs]
    if any(line is not None for _, line in lines):  # every job the sweep has, checked before one starts
        said = check_line(["-m", *overrides])  # as its jobs run: the command's overrides, one run each
        if said is not None:
            raise SweepResumeError(f"{sweep_dir}'s jobs cannot run as its multirun.yaml stores them, so none was "
                                   f"started: {said}")
    counts = {s: sum(j.status == s for j in jobs) for s in dict.fromkeys(j.status for j in jobs)}
    console.print(f"sweep {sweep_dir}: {len(jobs)} jobs (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")",
                  markup=False)
    launcher = (config.get("hydra") or {}).get("launcher") or {}
    if isinstance(launcher, dict) and launcher.get("_target_") == RAY_LAUNCHER:
        return _resume_on_ray(sweep_dir, lines, launcher, console)
    for job, line in lines:
        if not _announce(job, line, console):
            continue
        code = run_line(line)
        if code in (130, 143):  # stopped again: what ran is summarised, and the same command goes on later
            console.print(f"stopped during job {job.num}: `trainkit sweep resume {sweep_dir}` goes on from here.",
                          markup=False)
            report(sweep_dir, console)
            return code
    shutil.rmtree(sweep_dir / ".resume", ignore_errors=True)
    return report(sweep_dir, console)


def _announce(job: Job, line: list[str] | None, console: Console) -> bool:
    """Say what becomes of `job`; whether it runs. A job that runs afresh loses what its directory held."""
    if line is None:
        why = " (--retry-failed runs it again)" if job.status == "failed" else ""
        console.print(f"job {job.num}: {job.status}, kept{why}", markup=False)
        return False
    verb = "resuming" if any(a.startswith("resume=") for a in line) else "running"
    if verb == "running" and job.dir.is_dir():  # failed (retried), or stopped before a checkpoint: afresh
        shutil.rmtree(job.dir)
    console.print(f"job {job.num}: {job.status}, {verb}: trainkit train {' '.join(job.overrides)}", markup=False)
    return True


def _resume_on_ray(sweep_dir: Path, lines: list[tuple[Job, list[str] | None]], launcher: dict,
                   console: Console) -> int:
    """A sweep that ran on Ray (hydra/launcher=ray) finishes there: its jobs' lines as Ray tasks, side by side."""
    from trainkit.clusters.ray import run_lines

    todo = [line for job, line in lines if _announce(job, line, console)]
    codes = run_lines(todo, launcher.get("num_cpus") or 1, launcher.get("num_gpus") or 0, launcher.get("address"),
                      say=lambda said: console.print(said, markup=False)) if todo else []
    stopped = next((c for c in codes if c in (130, 143)), None)
    if stopped is not None:
        console.print(f"stopped: `trainkit sweep resume {sweep_dir}` goes on from here.", markup=False)
        report(sweep_dir, console)
        return stopped
    shutil.rmtree(sweep_dir / ".resume", ignore_errors=True)
    return report(sweep_dir, console)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one paragraph on standard error, exit 2, as every usage error
        raise UsageError(f"trainkit sweep resume: {message}. Usage: trainkit sweep resume DIR [--retry-failed] "
                         f"[plugins=[module,...]].")


def main(argv: list[str]) -> int:
    from trainkit.registry import plugins_arg

    parser = _Parser(
        prog="trainkit sweep resume", description="Finish a stopped sweep (trainkit train -m ...): finished jobs are "
        "kept, interrupted jobs resume from their checkpoints, jobs never started run; then the summary covers all. "
        "A sweep whose jobs load plugin modules needs them named: plugins=[module,...].")
    parser.add_argument("dir", help="the sweep directory (outputs/multirun/<date>/<time>), or its URL in object "
                        "storage (s3://bucket/sweep)")
    parser.add_argument("--retry-failed", action="store_true", help="also run the failed jobs again, from scratch")
    args, rest = parser.parse_known_args(argv)
    wrong = [a for a in rest if not a.lstrip("+").startswith("plugins=")]
    if wrong:
        parser.error(f"unrecognized arguments: {' '.join(wrong)}")
    console = Console(highlight=False, soft_wrap=True)
    if remote.is_url(args.dir):
        return _resume_stored(args.dir, args.retry_failed, console, plugins_arg(rest))
    return resume(Path(args.dir), args.retry_failed, console, plugins_arg(rest))


def _resume_stored(url: str, retry_failed: bool, console: Console, plugins: list[str]) -> int:
    """A sweep in object storage: it comes down into a staging folder (its jobs' epoch checkpoints aside), is finished
    there, and one mirror uploads what its jobs and its summary write, as they write it."""
    from trainkit.commands import MIRRORED

    sweep_dir = remote.stage(url, "the sweep directory")
    mirror = remote.Mirror(sweep_dir, url).start()
    os.environ[MIRRORED] = remote.url_of(sweep_dir) or url  # the jobs' processes leave the uploads to this one
    try:
        return resume(sweep_dir, retry_failed, console, plugins)
    finally:
        os.environ.pop(MIRRORED, None)
        mirror.close()
        if mirror.error is not None:
            raise mirror.failure(finished=True) from None
