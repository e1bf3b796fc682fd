"""One module per `trainkit` subcommand: short functions from a composed config and its Context to a result.

The shells call them the same way: the CLI under Hydra (trainkit.cli.hydra_app), the Python API in this process
(trainkit.api). A command reads the config through build/restore, runs the library, prints results on
`ctx.console` (standard output) and warnings on `ctx.errors` (standard error), and raises trainkit's errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)  # lines stay whole in logs and pipes


@dataclass
class Context:
    """What a command gets besides its config."""

    run_dir: Path  # the directory it writes to (claimed for it; a resumed run moves on into the run it continues)
    line: list[str] = field(default_factory=list)  # the command as typed, for messages that say what to type
    overrides: list[str] = field(default_factory=list)  # the line's overrides, to run the same command elsewhere
    config_dirs: list[Path] = field(default_factory=list)  # the user's --config-dir folders
    sweep: bool = False  # a job of a sweep (-m): a failure is a row of the sweep's summary
    callbacks: tuple[Any, ...] = ()  # trainkit.trainer.Callback objects (the Python API) for the run's Trainer
    console: Console = field(default_factory=_console)  # results: standard output
    errors: Console = field(default_factory=lambda: _console(stderr=True))  # warnings and errors: standard error


def execute(target: str, cfg: Any, ctx: Context) -> Any:
    """Run the command function `target` ("module:function", from the command table) on `cfg`."""
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(cfg, ctx)
