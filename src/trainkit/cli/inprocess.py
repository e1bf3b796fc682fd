"""A command run in this process for the Python API (trainkit.train, trainkit.api.run): the command line's checks,
run directory, .hydra files and log file, without Hydra's app, sys.argv or the root logger."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trainkit.cli import compose, line
from trainkit.cli.failure import explain
from trainkit.cli.rundir import claim_run_dir, clean_up, keeps, remove_unused
from trainkit.cli.table import COMMANDS
from trainkit.commands import Context, execute
from trainkit.errors import ConfigError
from trainkit.rundirs import claim


def run(name: str, args: list[str], callbacks: tuple[Any, ...] = ()) -> Any:
    """`trainkit NAME OVERRIDES` in this process (train, eval, predict, export, sample, data check): the same checks,
    run directory and files; returns what the command returns (train: the summary dict) and raises trainkit's error
    (a UserError with the one-paragraph message) where the command would exit 1 or 2. Sweeps (-m) run from the
    command line."""
    if name not in COMMANDS or COMMANDS[name].config is None:
        runnable = [n for n, c in COMMANDS.items() if c.config is not None]
        raise ConfigError(f"trainkit.api.run: {name!r} is not a command that runs in this process; choose one of "
                          f"{', '.join(runnable)}.")
    if any(a.startswith("-") for a in args):
        raise ConfigError(f"{' '.join(a for a in args if a.startswith('-'))}: flags are for the command line (sweeps "
                          f"with -m run there: trainkit {name} -m ...); from Python give overrides only.")
    inv = line.read(name, args)
    cfg = compose.preflight(inv)
    failed = True
    try:
        inv = claim_run_dir(inv)
        chosen = next((a.split("=", 1)[1] for a in inv.args if a.startswith("hydra.run.dir=")), None)
        run_dir = Path(chosen) if chosen is not None else Path(".")  # data check: the working directory, untouched
        log = run_dir / f"{name.replace(' ', '_')}.log"
        try:
            ctx = Context(run_dir, line=inv.line, overrides=args, config_dirs=inv.config_dirs, callbacks=callbacks)
            if chosen is None:
                result = execute(COMMANDS[name].target, cfg, ctx)
            else:
                claim.write_hydra_files(run_dir, cfg, args, name)
                with _log_file(log):
                    result = execute(COMMANDS[name].target, cfg, ctx)
        except (Exception, KeyboardInterrupt) as exc:  # trainkit's error, or any other as one paragraph
            kept = chosen is not None and keeps(inv, run_dir, exc)
            error = explain(exc, log=log if kept else None, doing=f"trainkit {name}")
            clean_up(inv, run_dir, error)
            if error is exc or isinstance(exc, KeyboardInterrupt):  # Ctrl-C in Python stays a KeyboardInterrupt
                raise
            raise error from exc  # from Python, the original traceback stays reachable (__cause__)
        failed = False
        return result
    finally:
        remove_unused(inv, failed)


class _log_file:
    """trainkit's own log records (not the root logger's) also go to the run's log file while a command runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.logger = logging.getLogger("trainkit")
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)

    def __exit__(self, *exc: Any) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
        self.handler.close()


