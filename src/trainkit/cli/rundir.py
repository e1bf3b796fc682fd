"""The run directory of a line: claimed before Hydra starts (two runs started in the same second never share one),
agreed on by every process of a torchrun group, and removed again when the line fails before any result."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from trainkit.cli.line import Invocation
from trainkit.cli.table import SWEEP_DIR
from trainkit.storage import is_url, tidy


def claim_run_dir(inv: Invocation) -> Invocation:
    """The invocation with its run directory (or a sweep's directory) claimed: a fresh one (atomic mkdir, `_1`,
    `_2`... when taken), handed to Hydra as hydra.run.dir, unless the user chose one or nothing runs. Under torchrun,
    rank 0 claims it and every rank uses it; ranks > 0 write no Hydra files or logs there."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return _claimed(inv)
    from trainkit import clusters
    from trainkit.engine import distributed

    cluster = clusters.detect()
    cluster.join()
    main = distributed.is_main()
    args = distributed.agree(_rank0_args(inv, cluster) if main else None)
    if not main:
        args = [*args, "hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    inv.args = args
    return inv


def _rank0_args(inv: Invocation, cluster: Any) -> list[str]:
    """A restarted process group (torchrun --max_restarts) goes on in the run directory that its first attempt
    trained in, which torch elastic's agent keeps for it; a first attempt claims a new one."""
    earlier = cluster.recall("run_dir")
    if earlier is None or inv.command.run_dir is None or inv.multirun or any(a.startswith("hydra.run.dir=")
                                                                             for a in inv.args):
        return _claimed(inv).args
    return [*inv.args, f"hydra.run.dir={earlier}"]


def _claimed(inv: Invocation) -> Invocation:
    if inv.command.run_dir is None or inv.runs_nothing:
        return inv
    from trainkit.rundirs.claim import claim, make_dirs

    key, pattern = ("hydra.sweep.dir", SWEEP_DIR) if inv.multirun else ("hydra.run.dir", inv.command.run_dir)
    what = "the sweep directory" if inv.multirun else "the run directory"
    chosen = next((a.split("=", 1)[1] for a in inv.args if a.startswith(f"{key}=")), None)
    resumed = None if inv.multirun else _resumed_url(inv)
    if resumed is not None or (chosen is not None and is_url(chosen.strip("'\""))):
        return _staged(inv, key, what, chosen, resumed)
    if chosen is not None:
        value = chosen.strip("'\"")
        if "${" not in value:  # made here, so that a file in the way or a name too long is said before Hydra starts
            inv.out_dir = Path(value)
            if inv.out_dir.is_dir():  # the user's: what this line adds to it goes again if it fails
                inv.had = set(os.listdir(inv.out_dir))
            inv.created.update(p.resolve() for p in make_dirs(Path(value), what))
        return inv
    made: list[Path] = []
    claimed = claim(time.strftime(pattern), made)
    inv.out_dir = Path(claimed)
    inv.created.update(p.resolve() for p in [*made, Path(claimed)])
    inv.args = [*inv.args, f"{key}={claimed}"]
    return inv


def _resumed_url(inv: Invocation) -> str | None:
    value = next((a.split("=", 1)[1] for a in inv.args if a.startswith("resume=")), "").strip("'\"")
    if not is_url(value):
        return None
    from trainkit.rundirs.remote import run_url

    return run_url(value)


def _staged(inv: Invocation, key: str, what: str, chosen: str | None, resumed: str | None) -> Invocation:
    """A run (or sweep) directory in object storage: the line runs in its local staging folder, which holds what the
    URL holds already, and the command's mirror uploads to the URL (trainkit.rundirs.remote). `resume=URL` continues
    that run in place, so it is the run directory too."""
    from trainkit.errors import ConfigError
    from trainkit.rundirs import remote

    url = tidy((chosen or "").strip("'\""))
    if resumed is not None:
        if chosen is not None and url != resumed:
            raise ConfigError(f"resume={resumed} continues that run in place, in object storage, so {key}={url} cannot "
                              f"be its run directory too: drop {key}=..., or give resume= the run you mean.")
        url = resumed
    staged = remote.stage(url, what)
    inv.out_dir = staged
    inv.had = set(os.listdir(staged))  # what the bucket held: a failed line removes only what it added
    # resume=URL stays as typed (the run's overrides say it); `train` finds the URL's staging folder made here.
    inv.args = [*(a for a in inv.args if not a.startswith(f"{key}=")), f"{key}={staged}"]
    return inv


def keeps(inv: Invocation, run_dir: Path, exc: BaseException) -> bool:
    """Whether an error leaves the run directory: one the user had (like `.`), one with checkpoints to resume from,
    or an error that keeps it (a stop after saving, a failed data-parallel group)."""
    return (run_dir.resolve() not in inv.created or getattr(exc, "keeps_run_dir", False)
            or any(run_dir.glob("checkpoints/*.ckpt")))


def clean_up(inv: Invocation, run_dir: Path, exc: BaseException) -> None:
    """No run directory left half-made by an error before any result. One the user had (like `.`) stays, without
    what this line wrote in it (.hydra/, its log, its lock)."""
    if not keeps(inv, run_dir, exc):
        shutil.rmtree(run_dir, ignore_errors=True)
    elif _is_users(inv, run_dir) and not getattr(exc, "keeps_run_dir", False) and not any(
            run_dir.glob("checkpoints/*.ckpt")):
        _remove_added(inv, run_dir)


def _is_users(inv: Invocation, folder: Path) -> bool:
    return inv.had is not None and inv.out_dir is not None and folder.resolve() == inv.out_dir.resolve()


def _remove_added(inv: Invocation, folder: Path) -> None:
    for name in set(os.listdir(folder)) - (inv.had or set()):
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def remove_unused(inv: Invocation, failed: bool = True) -> None:
    """The folders this line made and left empty (a run directory it never used, a new date's folder) are removed;
    so is, when the line failed, a sweep directory it made in which no job started (multirun.yaml, a study, a
    launcher's scratch files are all it holds)."""
    from trainkit.rundirs.claim import remove_made

    out = inv.out_dir
    if failed and inv.multirun and out is not None and out.is_dir():
        from trainkit.rundirs.sweeps import job_dirs

        if not job_dirs(out) and not any(p.is_dir() and p.name[:1].isdigit() for p in out.iterdir()):
            if out.resolve() in inv.created:
                shutil.rmtree(out, ignore_errors=True)
            elif _is_users(inv, out):
                _remove_added(inv, out)
    remove_made(sorted(inv.created))
