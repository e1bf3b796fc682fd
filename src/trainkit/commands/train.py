"""`trainkit train`: find the run to resume, take the run directory's lock, build the Trainer from the config and run
it; with trainer.devices=N, launch N processes that do the same. The cluster environment the process runs in
(trainkit.clusters: one process, torchrun, SLURM) says how it joins its process group and what a pre-emption means.

A process that runs again in the same job (a restart of torch elastic's process group, a requeued SLURM job)
continues its run from the newest checkpoint in its run directory without being asked to.
"""

from __future__ import annotations

import gc
import json
import re
import signal
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from trainkit import clusters, registry
from trainkit.build import build_trainer
from trainkit.commands import Context
from trainkit.engine import checkpoint, distributed
from trainkit.engine.signals import Interrupted, StopRequest
from trainkit.errors import EXIT_CODES, UserError
from trainkit.logging.text import shown
from trainkit.rundirs import claim, remote, resume
from trainkit.rundirs.remote import url_of
from trainkit.trainer import Trainer, resume_arg, write_summary


class GroupFailed(UserError):
    """A process of a data-parallel run failed, so every other one stopped too; the checkpoints stay."""

    keeps_run_dir = True

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


RESTARTING = EXIT_CODES["restart"]  # EX_TEMPFAIL: this process ends, and torch elastic starts the group again


def train(cfg: Any, ctx: Context) -> dict[str, Any]:
    registry.load_plugins(cfg.get("plugins") or [])  # a launcher's worker process (joblib, SLURM) starts without them
    cluster = clusters.detect(cfg.trainer.get("cluster", "auto"))
    cluster.join()  # the process group, where the environment has several processes (a no-op for one)
    devices = int(cfg.trainer.get("devices", 1))
    if _launches(cfg, devices, cluster):
        return _launch(cfg, ctx, devices, cluster)
    earlier = cluster.recall("error")
    if earlier is not None:  # a restart would only replay the steps up to it
        if not distributed.is_main():
            raise SystemExit(1)  # rank 0 says why
        raise UserError(f"{cluster.restarter} restarted the processes, but a restart cannot help: {earlier}")
    try:
        return _train(cfg, ctx, cluster)
    except UserError as exc:
        if not isinstance(exc, (Interrupted, GroupFailed)):  # a mistake or a diverged run, not a lost process
            cluster.remember("error", str(exc))
        raise


def _launches(cfg: Any, devices: int, cluster: clusters.ClusterEnvironment) -> bool:
    """Whether this process starts the run's processes (trainer.devices=N, or any trainer.launcher=ray run) rather
    than being one of them. A worker that Ray Train started is the run, even alone."""
    if cluster.worker:
        return False
    return (devices > 1 or cfg.trainer.get("launcher", "local") == "ray") and distributed.world_size() == 1


def _train(cfg: Any, ctx: Context, cluster: clusters.ClusterEnvironment) -> dict[str, Any]:
    main = distributed.is_main()
    run_dir = ctx.run_dir
    found = _resume(cfg, run_dir, ctx, cluster) if main else None
    found, stored = distributed.agree((found, url_of(found.checkpoint) if found else None))
    if found is not None:
        run_dir = found.run_dir
        if stored and not found.checkpoint.is_file():  # a process on another node: rank 0's staging is not here
            remote.fetch_to(stored, found.checkpoint)
    if main:
        cluster.remember("run_dir", str(run_dir))  # where a restart of the process group continues
    with claim.lock(run_dir) if main else nullcontext(), StopRequest(cluster.stop_signals) as stop:
        trainer = build_trainer(cfg, run_dir, resume=found.checkpoint if found else None, callbacks=ctx.callbacks,
                                stop=stop, console=ctx.console)
        for warning in trainer.data.warnings if main else []:
            ctx.errors.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
        try:
            summary = trainer.run()
        except Interrupted as exc:
            requeued = cluster.requeue(exc.signum) if main else None
            if requeued:
                ctx.console.print(requeued)
            raise
        except Exception as exc:
            if distributed.world_size() > 1 and distributed.lost_peer(exc):
                raise _group_failed(trainer, run_dir, exc, cluster) from None
            raise
    # Leave the process group before the interpreter exits: a gloo group still alive at exit can abort a worker
    # ("terminate called without an active exception") after the run has finished and saved. The trainer goes
    # first: its DDP wrappers hold the group, which would otherwise outlive destroy_process_group until exit.
    del trainer
    gc.collect()
    distributed.teardown()
    return summary


def _resume(cfg: Any, run_dir: Path, ctx: Context, cluster: clusters.ClusterEnvironment) -> resume.Resume | None:
    newest = run_dir / "checkpoints" / "last.ckpt"
    again = cluster.restarted()
    if again and newest.is_file():  # the same job once more: its own run, whatever resume= says
        ctx.console.print(f"{again}: continuing {shown(run_dir)} from its newest checkpoint.")
        found = resume.Resume(run_dir, newest, [])
    elif cfg.get("resume"):
        found = resume.find_resume(str(cfg.resume), cfg, run_dir)
        if found is None:
            ctx.console.print("resume=auto: no unfinished run with this config under outputs/; starting a new run.")
            return None
    else:
        return None
    found = resume.check_compatible(found, checkpoint.load(found.checkpoint)["config"], cfg)
    if found.changes:
        ctx.console.print("changed since the checkpoint: " + ", ".join(f"{k} {old!r} → {new!r}"
                                                                      for k, old, new in found.changes))
    resume.adopt(run_dir, found.run_dir)
    return found


def _group_failed(trainer: Trainer, run_dir: Path, exc: Exception, cluster: clusters.ClusterEnvironment) -> GroupFailed:
    """What this process says when another one of its group is gone: the collective it was in failed."""
    gone = f"another process of this data-parallel run is gone ({_torch_said(exc)})"
    left = cluster.restarts_left()
    if left:
        return GroupFailed(f"{gone}. {cluster.restarter} restarts them all ({_restarts(left)} left), and they continue "
                           f"from the newest checkpoint in {shown(run_dir)}.", exit_code=RESTARTING)
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


def _launch(cfg: Any, ctx: Context, devices: int, cluster: clusters.ClusterEnvironment) -> dict[str, Any]:
    """`trainer.devices=N`: the same command in N processes sharing this run directory, started by torch elastic
    launch on this machine (trainer.launcher=local) or as Ray Train's workers on a Ray cluster (trainer.launcher=ray);
    when one fails, all are restarted (trainer.max_restarts times) and continue from the newest checkpoint."""
    run_dir = ctx.run_dir
    if devices > 1:
        ctx.console.print(f"data-parallel: {devices} processes, global batch {devices} × {cfg.data.batch_size} = "
                          f"{devices * cfg.data.batch_size}")
    max_restarts = int(cfg.trainer.max_restarts)
    # The user's own config directories (--config-dir) compose the same config in every process. A sweep job's
    # directory (`3_data.batch_size=64,...`) holds `=` and `,`: quoted, it is one override value.
    dirs = [f"--config-dir={d}" for d in ctx.config_dirs]
    if cfg.trainer.get("launcher", "local") == "ray":
        # Ray's workers may run on other machines: they reach the run directory through its object storage URL (each
        # stages it locally), or else at the same path (a shared file system, as on SLURM).
        from trainkit.clusters import ray

        args = [*dirs, *ctx.overrides, f"hydra.run.dir={claim.quoted(url_of(run_dir) or run_dir)}"]
        with remote.written_elsewhere(run_dir):  # rank 0 uploads; what it wrote then comes down here
            code = ray.launch(devices, args, max_restarts, str(cfg.trainer.device), say=ctx.console.print)
    else:
        from trainkit.clusters.torchrun import launch

        code = launch(devices, [*dirs, *ctx.overrides, f"hydra.run.dir={claim.quoted(run_dir)}"], max_restarts)
    summary = run_dir / "summary.json"  # rank 0 wrote it (a resumed run writes in the run it continued)
    result = json.loads(summary.read_text()) if summary.is_file() else {}
    if code > 128 and code not in (130, 143) and result.get("status") != "failed" and run_dir.is_dir():
        # A process was killed (128 + its signal), and it was rank 0, which would have said so: this one does.
        error = (f"a process of this data-parallel run was killed (exit code {code}), and no restarts are left "
                 f"({_restarts(max_restarts)} used): {_continue_with(run_dir)}")
        write_summary(run_dir, {**result, "status": "failed", "run_dir": str(run_dir), "error": error})
        raise GroupFailed(error)
    if code == 143:  # stopped by a pre-emption signal: the environment may put the job back in its queue
        requeued = cluster.requeue(signal.SIGTERM)
        if requeued:
            ctx.console.print(requeued)
    if code in (130, 143) or (code and not ctx.sweep):
        raise SystemExit(code)  # the processes already said why (130/143: stopped and saved; a sweep stops too)
    if code:  # a sweep's job: a failed row of its summary (trainkit.cli.hydra_app), and the other jobs run on
        raise GroupFailed(result.get("error") or f"its {devices} data-parallel processes failed (exit code {code}) "
                          f"before they wrote a summary: what they said is printed above.")
    return result
