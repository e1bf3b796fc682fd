"""A line run under Hydra (`hydra.main`): Hydra composes the config, makes the run directory's .hydra/ files and logs,
runs sweeps through its sweepers and launchers, and calls the task function below once per job. The task function
hands the command its config and Context; an error becomes one paragraph on standard error and the command's exit
code, or, in a sweep, a failed row of the sweep's summary while the other jobs run on."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from trainkit.cli.failure import explain, fail
from trainkit.cli.line import Invocation, flags_first
from trainkit.cli.rundir import clean_up, keeps, remove_unused


def run(inv: Invocation, prog: str) -> None:
    import hydra

    from trainkit.cli.compose import config_dir, register_schemas

    register_schemas(inv.config_dirs)
    sys.argv = [prog, *flags_first(inv.args)]
    if inv.launcher.startswith(SUBMITIT):
        _sbatch_said_once()
    failed = True
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises what it meets (no traceback of its own): said here, once
    try:
        app = hydra.main(config_path=str(config_dir()), config_name=inv.command.config, version_base="1.3")
        app(_task_function(inv))()
        failed = False
    except SystemExit as exc:  # the command's paragraph was said; a sweep's end says its own code
        failed = exc.code not in (0, None)
        _report_stopped_sweep(inv)
        raise
    except BaseException as exc:  # Hydra's, a launcher's or a sweeper's error, a signal before or between jobs
        _report_stopped_sweep(inv)
        error = explain(exc, doing=f"trainkit {inv.name}")
        if not inv.multirun and inv.out_dir is not None:  # e.g. SIGTERM while Hydra set the run up: .hydra/ goes
            clean_up(inv, inv.out_dir, error)
        raise error from None
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
        remove_unused(inv, failed)
        if inv.multirun and inv.out_dir is not None and inv.out_dir.is_dir():
            _upload_sweep(inv.out_dir)


def _upload_sweep(sweep_dir: Path) -> None:
    """A sweep in object storage: each job uploaded its own directory; its table, curves and multirun.yaml go up
    at its end."""
    from trainkit.rundirs import remote

    if remote.url_of(sweep_dir) is not None:
        remote.sync_up(sweep_dir)


SUBMITIT = "hydra_plugins.hydra_submitit_launcher."


def _sbatch_said_once() -> None:
    """submitit prints sbatch's standard error itself before it raises it; trainkit's paragraph says it (with the fix),
    so submitit's own print is kept off the console."""
    import contextlib
    import io

    try:
        from submitit.core import utils
    except ImportError:
        return
    original = utils.CommandFunction.__call__
    if getattr(original, "trainkit_quiet", False):
        return

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        with contextlib.redirect_stderr(io.StringIO()):
            return original(self, *args, **kwargs)

    call.trainkit_quiet = True  # type: ignore[attr-defined]
    utils.CommandFunction.__call__ = call


def _task_function(inv: Invocation):
    def task(cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from trainkit.commands import Context, execute

        hydra = HydraConfig.get()
        run_dir = Path(hydra.runtime.output_dir)
        sweep = hydra.mode == RunMode.MULTIRUN
        dirs = [Path(s.path) for s in hydra.runtime.config_sources if s.provider == "command-line" and s.schema == "file"]
        ctx = Context(run_dir, line=inv.line, overrides=list(hydra.overrides.task), config_dirs=dirs, sweep=sweep)
        try:
            result = execute(inv.command.target, cfg, ctx)
        except (Exception, KeyboardInterrupt) as exc:  # every error ends here as a paragraph, never as a traceback
            if sweep and isinstance(exc, Exception):
                return _job_failed(ctx, exc, hydra.job.num, _log_file(run_dir, hydra.job.name))
            # A bug's traceback goes to the run's log, unless the run directory is removed: then to a file of its own.
            kept = keeps(inv, run_dir, exc)
            error = explain(exc, log=_log_file(run_dir, hydra.job.name) if kept else None, doing=f"trainkit {inv.name}")
            clean_up(inv, run_dir, error)
            fail(error)
        # Hydra's sweepers (Optuna) optimise what the task function returns.
        return result.get("best_value") if isinstance(result, dict) else None

    return task


def _log_file(run_dir: Path, job_name: str) -> Path:
    """The file Hydra's job logging writes the run's log to (configs: hydra/job_logging), else <run dir>/<job>.log."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return run_dir / f"{job_name}.log"


def _job_failed(ctx: Any, exc: Exception, num: int, log: Path) -> None:
    """In a sweep, a failed job is a row of the sweep's summary and the other jobs run on (the sweep exits 1 at the
    end: trainkit.rundirs.sweeps.report). A signal still stops the whole sweep (then the jobs so far are summarised)."""
    from trainkit.errors import InternalError
    from trainkit.rundirs.sweeps import record_failure

    if getattr(exc, "exit_code", 1) != 1:
        fail(exc)  # says so and raises SystemExit(130 or 143)
    explained = explain(exc, log=log, doing=f"job {num}")
    # A bug's row says its type and message; its traceback went to the job's log file, not to the console.
    error = f"{type(exc).__name__}: {exc}" if isinstance(explained, InternalError) else str(explained)
    ctx.errors.print(f"[bold red]error:[/bold red] job {num} failed; the sweep goes on: ", end="")
    ctx.errors.print(str(explained) if isinstance(explained, InternalError) else error, markup=False)
    record_failure(ctx.run_dir, error)
    # not a number: an Optuna sweep records the trial as failed


def _report_stopped_sweep(inv: Invocation) -> None:
    """A sweep that ended before Hydra's end-of-sweep callbacks (Ctrl-C, a sweeper's error) still gets its summary of
    the jobs that ran."""
    if not inv.multirun:
        return
    value = next((a.partition("=")[2] for a in inv.args if a.startswith("hydra.sweep.dir=")), "")
    sweep_dir = Path(value)
    if not value or "${" in value or not sweep_dir.is_dir() or (sweep_dir / "sweep_summary.csv").exists():
        return
    from rich.console import Console

    from trainkit.rundirs import sweeps

    if sweeps.job_dirs(sweep_dir):
        sweeps.report(sweep_dir, Console(highlight=False, soft_wrap=True))
