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

from trainkit.rundirs import remote


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
    command = getattr(importlib.import_module(module), name)
    url = remote.url_of(ctx.run_dir)
    if url is None:
        return command(cfg, ctx)
    return _mirrored(command, cfg, ctx, url)


def _mirrored(command: Any, cfg: Any, ctx: Context, url: str) -> Any:
    """A command whose run directory is a staging folder of object storage: its files go up as they complete (a
    checkpoint at once), the rest at the end. When uploads fail, a training run stops at its next step."""
    from trainkit.storage import StorageError
    from trainkit.trainer import Callback

    mirror = remote.Mirror(ctx.run_dir, url).start()

    class Uploads(Callback):
        def on_checkpoint_end(self, trainer: Any) -> None:
            mirror.wake()

        def on_step_end(self, trainer: Any, step: int, metrics: Any) -> None:
            if mirror.error is not None:
                raise mirror.failure(finished=False)

    ctx.callbacks = (*ctx.callbacks, Uploads())
    finished = False
    try:
        result = command(cfg, ctx)
        finished = True
    except StorageError:
        finished = None  # the mirror's own error, or object storage failing in the command: said once, below
        raise
    finally:
        mirror.close(final=finished is not None)
        if mirror.error is not None and finished is not False:
            raise mirror.failure(finished=bool(finished)) from None
    return result
