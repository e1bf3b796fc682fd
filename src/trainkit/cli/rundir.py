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
    key, pattern = ("hydra.sweep.dir", SWEEP_DIR) if inv.multirun else ("hydra.run.dir", inv.command.run_dir)
    chosen = next((a.split("=", 1)[1] for a in inv.args if a.startswith(f"{key}=")), None)
    if chosen is not None:
        if not inv.multirun and not Path(chosen).exists():
            inv.created.add(Path(chosen).resolve())
        return inv
    from trainkit.rundirs.claim import claim

    claimed = claim(time.strftime(pattern))
    if not inv.multirun:
        inv.created.add(Path(claimed).resolve())
    inv.args = [*inv.args, f"{key}={claimed}"]
    return inv


def clean_up(inv: Invocation, run_dir: Path, exc: BaseException) -> None:
    """No run directory left half-made by an error before any result (never one the user had, like `.`)."""
    made_here = run_dir.resolve() in inv.created
    if made_here and not getattr(exc, "keeps_run_dir", False) and not any(run_dir.glob("checkpoints/*.ckpt")):
        shutil.rmtree(run_dir, ignore_errors=True)


def remove_unused(inv: Invocation) -> None:
    """Run directories claimed for a line that never ran (its overrides did not compose): empty, so removed."""
    for made in inv.created:
        if made.is_dir() and not any(made.iterdir()):
            made.rmdir()
