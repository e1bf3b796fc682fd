"""`trainkit train`: build the run, fit, test the best checkpoint, write summary.json and say where it all is."""

from __future__ import annotations

import json
import math
import os
from contextlib import nullcontext
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from trainkit import rundirs
from trainkit.build import build_optimization, build_run
from trainkit.engine import checkpoint, distributed
from trainkit.engine.device import set_deterministic
from trainkit.engine.loop import FitState, Hooks, evaluate, fit, num_batches
from trainkit.engine.rng import seed_everything, set_rng_state
from trainkit.engine.signals import Interrupted, StopRequest, requeue_on_slurm
from trainkit.errors import UserError
from trainkit.logging.run_logger import RunLogger, SilentLogger


def recipe_yaml(cfg: DictConfig) -> str:
    """The resolved config without Hydra's own node: what a checkpoint needs to rebuild its run."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def train(cfg: DictConfig, run_dir: Path, console: Console) -> dict[str, Any]:
    distributed.from_slurm()
    distributed.setup()  # a no-op for one process, and when the CLI already joined torchrun's group
    devices = int(cfg.trainer.get("devices", 1))
    if devices > 1 and distributed.world_size() == 1:
        return _launch(cfg, run_dir, console, devices)
    started = time.perf_counter()
    main = distributed.is_main()  # only rank 0 writes: logs, metrics, checkpoints, summary
    resume = _resume(cfg, run_dir, console) if main and cfg.get("resume") else None
    resume = distributed.agree(resume)
    if resume is not None:
        run_dir = resume.run_dir
    payload = checkpoint.load(resume.checkpoint) if resume is not None else None
    with rundirs.lock(run_dir) if main else nullcontext(), StopRequest() as stop:
        summary = _fit(cfg, run_dir, console if main else Console(quiet=True), stop, payload, resume)
    summary["wall_time_s"] = time.perf_counter() - started
    if main:
        _write_summary(run_dir, summary)
        if cfg.trainer.tensorboard:  # TensorBoard's HPARAMS tab: this run's config beside its final metrics
            from trainkit.sweep import log_hparams  # tensorboard is slow to import: only when it is on

            log_hparams(run_dir, cfg, summary)
        _print_summary(console, summary)
    return summary


def _resume(cfg: DictConfig, run_dir: Path, console: Console) -> rundirs.Resume | None:
    resume = rundirs.find_resume(str(cfg.resume), cfg, run_dir)
    if resume is None:
        console.print("resume=auto: no unfinished run with this config under outputs/; starting a new run.")
        return None
    resume = rundirs.check_compatible(resume, checkpoint.load(resume.checkpoint)["config"], cfg)
    rundirs.adopt(run_dir, resume.run_dir)
    return resume


def _launch(cfg: DictConfig, run_dir: Path, console: Console, devices: int) -> dict[str, Any]:
    """`trainer.devices=N`: the same command in N processes (torch elastic launch) sharing this run directory."""
    from hydra.core.hydra_config import HydraConfig

    console.print(f"data-parallel: {devices} processes, global batch {devices} × {cfg.data.batch_size} = "
                  f"{devices * cfg.data.batch_size}")
    code = distributed.launch(devices, [*HydraConfig.get().overrides.task, f"hydra.run.dir={run_dir}"])
    if code:
        raise SystemExit(code)  # the processes already said why (130/143: stopped and saved)
    summary = run_dir / "summary.json"  # rank 0 wrote it (a resumed run writes in the run it continued)
    return json.loads(summary.read_text()) if summary.is_file() else {}


def _fit(cfg: DictConfig, run_dir: Path, console: Console, stop: StopRequest,
         payload: dict[str, Any] | None, resume: rundirs.Resume | None) -> dict[str, Any]:
    seed_everything(cfg.seed)
    built = build_run(cfg)
    set_deterministic(built.settings.deterministic)
    task, settings, loaders = built.task, built.settings, built.loaders
    task.distribute(lambda module: distributed.wrap(module, built.device))
    main = distributed.is_main()
    steps_per_epoch = num_batches(loaders["train"], settings.limit_train_batches)
    opt = build_optimization(cfg, task, settings, built.device, steps_per_epoch)
    manager = checkpoint.CheckpointManager(run_dir / "checkpoints", task.monitor, task.monitor_mode, settings.keep_last_k)
    state = FitState()
    config_text = recipe_yaml(cfg)
    payload_fn = lambda: checkpoint.make_payload(config_text, task.modules(), opt, state, manager)  # noqa: E731
    if payload is not None:
        state = _restore(payload, task, opt, manager, resume)
        console.print(f"resuming [bold]{_shown(run_dir)}[/bold] at epoch {state.epoch + 1}, batch {state.batch} "
                      f"(step {state.step})" + _changes(resume.changes))
    else:
        if settings.enable_checkpointing and main:
            manager.preflight(payload_fn)
        console.print(f"run directory: [bold]{_shown(run_dir)}[/bold]  ({built.data.meta.name}, "
                      f"{len(built.data.train)} train / {len(built.data.val)} val samples, device {built.device}, "
                      f"precision {settings.precision})")
    if distributed.world_size() > 1:
        console.print(f"data-parallel: {distributed.world_size()} processes, global batch "
                      f"{distributed.world_size()} × {loaders['train'].batch_size}")
    hooks = Hooks(
        save_epoch=lambda metrics: manager.save_epoch(payload_fn, metrics, state.epoch, state.step),
        save_step=lambda: manager.save_step(payload_fn, state.epoch + 1, state.step),
        stop_requested=lambda: distributed.any_rank(stop.requested),  # every rank stops after the same step
    )
    if not settings.enable_checkpointing or not main:  # debug runs, and ranks > 0: nothing written
        hooks.save_epoch, hooks.save_step = (lambda metrics: None), (lambda: None)
    logger = RunLogger(run_dir, console, settings.max_epochs, progress=settings.progress,
                       plain_every_s=settings.plain_every_s, tensorboard=settings.tensorboard,
                       batch_size=loaders["train"].batch_size, resume_step=state.step if payload else None,
                       history=state.history) if main else SilentLogger()
    if payload is not None:
        set_rng_state(payload["rng"])  # last: building the model above drew from the generators
    try:
        fit(task, loaders["train"], loaders["val"], opt, logger, settings, hooks, state)
    except UserError as exc:  # interrupted, diverged, a failed save: say so where `trainkit runs` looks
        status = "interrupted" if isinstance(exc, Interrupted) else "failed"
        if main:
            _write_summary(run_dir, {**_summary(run_dir, state, manager, {}), "status": status, "error": str(exc)})
            requeued = requeue_on_slurm(stop.requested) if isinstance(exc, Interrupted) else None
            if requeued:
                console.print(requeued)
        raise
    finally:
        logger.close()
    distributed.barrier()  # rank 0's last checkpoint is on disk before any rank reads best.ckpt
    test_metrics: dict[str, float] = {}
    if "test" in loaders:  # the best checkpoint's weights; the last (averaged) ones when none was written
        if manager.best_path.exists():
            checkpoint.load_modules(checkpoint.load(manager.best_path), task.modules(), manager.best_path)
        with opt.ema.swapped() if opt.ema is not None and not manager.best_path.exists() else nullcontext():
            test_metrics = evaluate(task, loaders["test"], opt.autocast, "test/", settings.limit_eval_batches)
    return _summary(run_dir, state, manager, test_metrics)


def _restore(payload: dict[str, Any], task: Any, opt: Any, manager: checkpoint.CheckpointManager,
             resume: rundirs.Resume) -> FitState:
    key = "training_modules" if "training_modules" in payload else "modules"
    checkpoint.load_modules(payload, task.modules(), resume.checkpoint, key)
    try:
        opt.load_state_dict(payload["optimization"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise checkpoint.CheckpointError(
            f"the optimizer/scheduler state in {resume.checkpoint} does not fit this run's optimizer config "
            f"({' '.join(str(exc).split())[:200]})."
        ) from None
    manager.load_state_dict(payload["best"])
    return FitState(**payload["fit"])


def _changes(changes: list[tuple[str, Any, Any]]) -> str:
    if not changes:
        return ""
    return "; changed since the checkpoint: " + ", ".join(f"{k} {old!r} → {new!r}" for k, old, new in changes)


def _write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    path = run_dir / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)  # readers (trainkit runs, resume=auto) never see half a file


def _summary(run_dir: Path, state: FitState, manager: checkpoint.CheckpointManager,
             test: dict[str, float]) -> dict[str, Any]:
    final = dict(state.history[-1]) if state.history else {}
    best_row = next((r for r in state.history if r["epoch"] == manager.best_epoch), {})
    return {
        "status": "finished",
        "run_dir": str(run_dir),
        "epochs": state.epoch,
        "stopped_early": state.stopped_early,
        "steps": state.step,
        "monitor": manager.monitor,
        "monitor_mode": manager.mode,
        "best_epoch": manager.best_epoch,
        "best_value": manager.best,
        "final": final,
        "best": dict(best_row),
        "test": test,
        "checkpoints": {"last": str(manager.last_path), "best": str(manager.best_path)},
    }


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title=f"trainkit run: {summary['epochs']} epochs, {summary['wall_time_s']:.1f} s")
    table.add_column("metric")
    table.add_column("final", justify="right")
    table.add_column(f"best (epoch {summary['best_epoch']})", justify="right")
    final, best = summary["final"], summary["best"]
    for key in final:
        if key in ("epoch", "step") or key.startswith("lr/"):
            continue
        table.add_row(key, _num(final.get(key)), _num(best.get(key)))
    for key, value in summary["test"].items():
        table.add_row(key, "", _num(value))
    console.print(table)
    console.print(f"best checkpoint: {_shown(Path(summary['checkpoints']['best']))}", highlight=False)
    console.print(f"run directory: [bold]{_shown(Path(summary['run_dir']))}[/bold]", highlight=False)


def _shown(path: Path) -> Path:
    """A path as the user can type it from where they ran the command."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if math.isfinite(value) and abs(value) < 1e5 else f"{value:.4g}"
