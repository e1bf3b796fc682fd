"""One module per `trainkit` subcommand: short functions from a composed config and its Context to a result.

The shells call them the same way: the CLI under Hydra (trainkit.cli.hydra_app), the Python API in this process
(trainkit.api). A command reads the config through build/restore, runs the library, prints results on
`ctx.console` (standard output) and warnings on `ctx.errors` (standard error), and raises trainkit's errors.
"""

from __future__ import annotations

import os
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
    uploader = os.environ.get(MIRRORED)
    if url is None or (uploader and (url == uploader or url.startswith(uploader + "/"))):
        return command(cfg, ctx)  # a data-parallel run's processes, a resumed sweep's jobs: their parent uploads
    os.environ[MIRRORED] = url
    try:
        return _mirrored(command, cfg, ctx, url)
    finally:
        os.environ.pop(MIRRORED, None)


MIRRORED = "TRAINKIT_MIRRORED"  # the URL a process (and so the processes it starts) uploads to already


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
    outcome = "failed"  # finished; failed (an error that keeps the run); undone (one before any result); storage
    try:
        result = command(cfg, ctx)
        outcome = "finished"
    except StorageError:  # the mirror's own error, or object storage failing in the command: said once, below
        outcome = "storage"
        raise
    except BaseException as exc:
        if not getattr(exc, "keeps_run_dir", False) and not any(ctx.run_dir.glob("checkpoints/*.ckpt")):
            outcome = "undone"  # what went up goes again, as the run directory does
        raise
    finally:
        mirror.close(final=outcome in ("finished", "failed"))
        if outcome == "undone":
            mirror.undo()
        elif mirror.error is not None and outcome != "failed":
            raise mirror.failure(finished=outcome == "finished") from None
    return result
