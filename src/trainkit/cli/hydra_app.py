"""A line run under Hydra (`hydra.main`): Hydra composes the config, makes the run directory's .hydra/ files and logs,
runs sweeps through its sweepers and launchers, and calls the task function below once per job. The task function
hands the command its config and Context; an error becomes one paragraph on standard error and the command's exit
code, or, in a sweep, a failed row of the sweep's summary while the other jobs run on."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from trainkit.cli.failure import fail
from trainkit.cli.line import Invocation, flags_first
from trainkit.cli.rundir import clean_up, remove_unused


def run(inv: Invocation, prog: str) -> None:
    import hydra

    from trainkit.cli.compose import config_dir, register_schemas

    register_schemas(inv.config_dirs)
    sys.argv = [prog, *flags_first(inv.args)]
    try:
        app = hydra.main(config_path=str(config_dir()), config_name=inv.command.config, version_base="1.3")
        app(_task_function(inv))()
    except BaseException:
        _report_stopped_sweep(inv)
        remove_unused(inv)
        raise


def _task_function(inv: Invocation):
    def task(cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from trainkit.commands import Context, execute
        from trainkit.errors import UserError

        hydra = HydraConfig.get()
        run_dir = Path(hydra.runtime.output_dir)
        sweep = hydra.mode == RunMode.MULTIRUN
        dirs = [Path(s.path) for s in hydra.runtime.config_sources if s.provider == "command-line" and s.schema == "file"]
        ctx = Context(run_dir, line=inv.line, overrides=list(hydra.overrides.task), config_dirs=dirs, sweep=sweep)
        try:
            result = execute(inv.command.target, cfg, ctx)
        except Exception as exc:
            if sweep:
                return _job_failed(ctx, exc, hydra.job.num)
            if isinstance(exc, UserError):
                clean_up(inv, run_dir, exc)
                fail(exc)
            raise
        # Hydra's sweepers (Optuna) optimise what the task function returns.
        return result.get("best_value") if isinstance(result, dict) else None

    return task


def _job_failed(ctx: Any, exc: Exception, num: int) -> None:
    """In a sweep, a failed job is a row of the sweep's summary and the other jobs run on (the sweep exits 1 at the
    end: trainkit.rundirs.sweeps.report). A signal still stops the whole sweep (then the jobs so far are summarised)."""
    import logging

    from trainkit.errors import UserError
    from trainkit.rundirs.sweeps import record_failure

    if getattr(exc, "exit_code", 1) != 1:
        fail(exc)  # says so and raises SystemExit(130 or 143)
    if isinstance(exc, UserError):
        error = str(exc)
    else:  # a bug or a crash in one job: its traceback goes to the job's train.log and the console
        error = f"{type(exc).__name__}: {exc}"
        logging.getLogger("trainkit").error("job %s failed", num, exc_info=exc)
    ctx.errors.print(f"[bold red]error:[/bold red] job {num} failed; the sweep goes on: ", end="")
    ctx.errors.print(error, markup=False)
    record_failure(ctx.run_dir, error)
    return None  # not a number: an Optuna sweep records the trial as failed


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
