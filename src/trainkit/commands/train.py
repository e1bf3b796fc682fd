"""`trainkit train`: find the run to resume, take the run directory's lock, and run the Trainer in it; with
trainer.devices=N, launch N processes that do the same.

A process that runs again in the same job (a restart of torch elastic's process group, a requeued SLURM job)
continues its run from the newest checkpoint in its run directory without being asked to.
"""

from __future__ import annotations

import gc
import json
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console

from trainkit import registry, rundirs
from trainkit.engine import checkpoint, distributed
from trainkit.engine.signals import Interrupted, StopRequest
from trainkit.errors import UserError
from trainkit.logging.text import shown
from trainkit.trainer import ATTACHED, Trainer, resume_arg, write_summary

class GroupFailed(UserError):
    """A process of a data-parallel run failed, so every other one stopped too; the checkpoints stay."""

    keeps_run_dir = True

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


RESTARTING = 75  # EX_TEMPFAIL: this process ends, and torch elastic starts the group again


def train(cfg: DictConfig, run_dir: Path, console: Console) -> dict[str, Any]:
    registry.load_plugins(cfg.get("plugins") or [])  # a launcher's worker process (joblib, SLURM) starts without them
    distributed.from_slurm()
    distributed.setup()  # a no-op for one process, and when the CLI already joined torchrun's group
    devices = int(cfg.trainer.get("devices", 1))
    if devices > 1 and distributed.world_size() == 1:
        return _launch(cfg, run_dir, console, devices)
    earlier = distributed.recall("error")
    if earlier is not None:  # a restart would only replay the steps up to it
        if not distributed.is_main():
            raise SystemExit(1)  # rank 0 says why
        raise UserError(f"torch elastic restarted the processes, but a restart cannot help: {earlier}")
    try:
        return _train(cfg, run_dir, console)
    except UserError as exc:
        if not isinstance(exc, (Interrupted, GroupFailed)):  # a mistake or a diverged run, not a lost process
            distributed.remember("error", str(exc))
        raise


def _train(cfg: DictConfig, run_dir: Path, console: Console) -> dict[str, Any]:
    main = distributed.is_main()
    resume = _resume(cfg, run_dir, console) if main else None
    resume = distributed.agree(resume)
    if resume is not None:
        run_dir = resume.run_dir
    if main:
        distributed.remember("run_dir", str(run_dir))  # where a restart of the process group continues
    with rundirs.lock(run_dir) if main else nullcontext(), StopRequest() as stop:
        trainer = Trainer(cfg, run_dir, console, callbacks=ATTACHED.get(), resume=resume, stop=stop)
        if distributed.world_size() > 1:
            _each_rank_keeps_its_partial_epoch(trainer)
        try:
            summary = trainer.run()
        except Exception as exc:
            if distributed.world_size() > 1 and distributed.lost_peer(exc):
                raise _group_failed(trainer, run_dir, exc) from None
            raise
    # Leave the process group before the interpreter exits: a gloo group still alive at exit can abort a worker
    # ("terminate called without an active exception") after the run has finished and saved. The trainer goes
    # first: its DDP wrappers hold the group, which would otherwise outlive destroy_process_group until exit.
    del trainer
    gc.collect()
    distributed.teardown()
    return summary


def _each_rank_keeps_its_partial_epoch(trainer: Trainer) -> None:
    """Each rank sums the metrics of its own samples, but rank 0 alone writes checkpoints: a mid-epoch checkpoint
    carries every rank's sums so far (`partial["ranks"]`), and each rank continues its epoch with its own, so a
    resumed epoch's train/ metrics are those of an uninterrupted one."""
    state, save = trainer.state, trainer.hooks.save_step
    saved = state.partial.get("ranks")
    if saved is not None and len(saved) == distributed.world_size():
        state.partial = saved[distributed.rank()]

    def save_step() -> None:  # the loop calls it on every rank after the same step
        own = state.partial
        state.partial = {**own, "ranks": distributed.gather(own)}
        try:
            save()
        finally:
            state.partial = own

    trainer.hooks.save_step = save_step


def _resume(cfg: DictConfig, run_dir: Path, console: Console) -> rundirs.Resume | None:
    newest = run_dir / "checkpoints" / "last.ckpt"
    again = distributed.restarted()
    if again and newest.is_file():  # the same job once more: its own run, whatever resume= says
        console.print(f"{again}: continuing {shown(run_dir)} from its newest checkpoint.")
        resume = rundirs.Resume(run_dir, newest, [])
    elif cfg.get("resume"):
        resume = rundirs.find_resume(str(cfg.resume), cfg, run_dir)
        if resume is None:
            console.print("resume=auto: no unfinished run with this config under outputs/; starting a new run.")
            return None
    else:
        return None
    resume = rundirs.check_compatible(resume, checkpoint.load(resume.checkpoint)["config"], cfg)
    rundirs.adopt(run_dir, resume.run_dir)
    return resume


def _group_failed(trainer: Trainer, run_dir: Path, exc: Exception) -> GroupFailed:
    """What this process says when another one of its group is gone: the collective it was in failed."""
    gone = f"another process of this data-parallel run is gone ({_torch_said(exc)})"
    left = distributed.restarts_left()
    if left:
        return GroupFailed(f"{gone}. torch elastic restarts them all ({_restarts(left)} left), and they continue from "
                           f"the newest checkpoint in {shown(run_dir)}.", exit_code=RESTARTING)
    error = f"{gone}, and no restarts are left: {_continue_with(run_dir)}"
    if trainer.main:
        write_summary(run_dir, {**trainer.summary({}), "status": "failed", "error": error})
    return GroupFailed(error)


def _torch_said(exc: Exception) -> str:
    """The first sentence of torch's message, without gloo's source location, and without brackets: the console
    would read `[/path/pair.cc:545]` as markup."""
    said = re.sub(r"^\[[^\]]*\]\s*", "", " ".join(str(exc).split())).split(". ")[0]
    return f"{type(exc).__name__}: {said}"[:200].replace("[", "(").replace("]", ")")


def _restarts(n: int | None) -> str:
    return f"{n} restart{'' if n == 1 else 's'}"


def _continue_with(run_dir: Path) -> str:
    newest = run_dir / "checkpoints" / "last.ckpt"
    if not newest.is_file():
        return "nothing was saved yet, so start the run again."
    fit = checkpoint.load(newest)["fit"]
    return (f"continue from {shown(newest)} (epoch {fit['epoch'] + 1}, batch {fit['batch']}, step {fit['step']}) "
            f"with the same command and {resume_arg(run_dir)}")


def _launch(cfg: DictConfig, run_dir: Path, console: Console, devices: int) -> dict[str, Any]:
    """`trainer.devices=N`: the same command in N processes (torch elastic launch) sharing this run directory;
    when one fails, all are restarted (trainer.max_restarts times) and continue from the newest checkpoint."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from trainkit.commands.sweep import quoted

    console.print(f"data-parallel: {devices} processes, global batch {devices} × {cfg.data.batch_size} = "
                  f"{devices * cfg.data.batch_size}")
    max_restarts = int(cfg.trainer.max_restarts)
    hydra = HydraConfig.get()
    # The user's own config directories (--config-dir) compose the same config in every process.
    dirs = [f"--config-dir={source.path}" for source in hydra.runtime.config_sources
            if source.provider == "command-line" and source.schema == "file"]
    # A sweep job's directory (`3_data.batch_size=64,...`) holds `=` and `,`: quoted, it is one override value.
    code = distributed.launch(devices, [*dirs, *hydra.overrides.task, f"hydra.run.dir={quoted(run_dir)}"],
                              max_restarts)
    summary = run_dir / "summary.json"  # rank 0 wrote it (a resumed run writes in the run it continued)
    result = json.loads(summary.read_text()) if summary.is_file() else {}
    if code > 128 and code not in (130, 143) and result.get("status") != "failed" and run_dir.is_dir():
        # A process was killed (128 + its signal), and it was rank 0, which would have said so: this one does.
        error = (f"a process of this data-parallel run was killed (exit code {code}), and no restarts are left "
                 f"({_restarts(max_restarts)} used): {_continue_with(run_dir)}")
        write_summary(run_dir, {**result, "status": "failed", "run_dir": str(run_dir), "error": error})
        raise GroupFailed(error)
    if code in (130, 143) or (code and HydraConfig.get().mode != RunMode.MULTIRUN):
        raise SystemExit(code)  # the processes already said why (130/143: stopped and saved; a sweep stops too)
    if code:  # a sweep's job: a failed row of its summary (trainkit.cli._job_failed), and the other jobs run on
        raise GroupFailed(result.get("error") or f"its {devices} data-parallel processes failed (exit code {code}) "
                          f"before they wrote a summary: what they said is printed above.")
    return result
