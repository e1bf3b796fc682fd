"""`trainkit train`: build the run, fit, test the best checkpoint, write summary.json and say where it all is."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from trainkit.build import build_optimization, build_run
from trainkit.engine import checkpoint
from trainkit.engine.device import set_deterministic
from trainkit.engine.loop import FitState, evaluate, fit
from trainkit.engine.rng import seed_everything
from trainkit.logging.run_logger import RunLogger


def recipe_yaml(cfg: DictConfig) -> str:
    """The resolved config without Hydra's own node: what a checkpoint needs to rebuild its run."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def train(cfg: DictConfig, run_dir: Path, console: Console) -> dict[str, Any]:
    started = time.perf_counter()
    seed_everything(cfg.seed)
    built = build_run(cfg)
    set_deterministic(built.settings.deterministic)
    task, settings, loaders = built.task, built.settings, built.loaders
    opt = build_optimization(cfg, task, settings, built.device)
    console.print(f"run directory: [bold]{_shown(run_dir)}[/bold]  ({built.data.meta.name}, {len(built.data.train)} train / "
                  f"{len(built.data.val)} val samples, device {built.device}, precision {settings.precision})",
                  highlight=False)

    manager = checkpoint.CheckpointManager(run_dir / "checkpoints", task.monitor, task.monitor_mode)
    config_text = recipe_yaml(cfg)
    payload_fn = lambda state: checkpoint.make_payload(config_text, task.modules(), opt, state, manager)  # noqa: E731
    logger = RunLogger(run_dir, console, settings.max_epochs, progress=settings.progress,
                       plain_every_s=settings.plain_every_s, tensorboard=settings.tensorboard,
                       batch_size=loaders["train"].batch_size)
    try:
        state = fit(task, loaders["train"], loaders["val"], opt, logger, settings, manager, payload_fn, FitState())
    finally:
        logger.close()

    test_metrics: dict[str, float] = {}
    if "test" in loaders and manager.best_path.exists():
        checkpoint.load_modules(checkpoint.load(manager.best_path), task.modules(), manager.best_path)
        test_metrics = evaluate(task, loaders["test"], opt.autocast, "test/", settings.limit_eval_batches)
    summary = _summary(run_dir, state, manager, test_metrics, time.perf_counter() - started)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    _print_summary(console, summary)
    return summary


def _summary(run_dir: Path, state: FitState, manager: checkpoint.CheckpointManager,
             test: dict[str, float], wall_s: float) -> dict[str, Any]:
    final = dict(state.history[-1]) if state.history else {}
    best_row = next((r for r in state.history if r["epoch"] == manager.best_epoch), {})
    return {
        "status": "finished",
        "run_dir": str(run_dir),
        "epochs": state.epoch,
        "steps": state.step,
        "monitor": manager.monitor,
        "monitor_mode": manager.mode,
        "best_epoch": manager.best_epoch,
        "best_value": manager.best,
        "final": final,
        "best": dict(best_row),
        "test": test,
        "checkpoints": {"last": str(manager.last_path), "best": str(manager.best_path)},
        "wall_time_s": wall_s,
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
