"""The generic training loop. It knows nothing of datasets, models or GANs: a Task says what a step is."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ContextManager, Protocol

import torch
from torch import Tensor

from trainkit.engine.checkpoint import CheckpointManager
from trainkit.engine.optimization import Optimization
from trainkit.engine.settings import TrainerSettings
from trainkit.errors import UserError
from trainkit.tasks.base import Task


class Logger(Protocol):
    def start_epoch(self, epoch: int, num_batches: int) -> None: ...
    def step(self, step: int, metrics: dict[str, float] | None) -> None: ...
    def end_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None: ...
    def images(self, epoch: int, images: dict[str, Tensor]) -> None: ...


class Loader(Protocol):
    def __iter__(self) -> Any: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss; nothing from that step was saved."""

    keeps_run_dir = True  # its metrics and earlier checkpoints show what happened


@dataclass
class FitState:
    """Counters that a checkpoint carries so a resumed run continues where it stopped."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimizer iterations
    history: list[dict[str, float]] = field(default_factory=list)  # one metrics row per epoch


class MeanAccumulator:
    """Batch-size weighted means of 0-dim tensors, kept on the device: no host sync until `.compute()`."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def add(self, values: dict[str, Tensor], n: int) -> None:
        for k, v in values.items():
            v = v.detach().float() * n
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += n

    def compute(self, prefix: str = "") -> dict[str, float]:
        if not self.count:
            return {}
        stacked = torch.stack(list(self.sums.values())).cpu().tolist()  # one sync for all metrics
        return {f"{prefix}{k}": v / self.count for k, v in zip(self.sums, stacked)}


def _limited(loader: Iterable, limit: int | None) -> Iterable:
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        yield batch


def evaluate(
    task: Task, loader: Loader, autocast: Callable[[], ContextManager[Any]] = nullcontext,
    prefix: str = "val/", limit: int | None = None,
) -> dict[str, float]:
    """Mean of the task's eval metrics over the whole split (or `limit` batches), modules in eval mode."""
    modes = {name: m.training for name, m in task.modules().items()}
    for m in task.modules().values():
        m.eval()
    acc = MeanAccumulator()
    loader.set_epoch(0)
    with torch.inference_mode():
        for x, y in _limited(loader, limit):
            with autocast():
                acc.add(task.eval_step((x, y)), len(x))
    for name, m in task.modules().items():
        m.train(modes[name])
    return acc.compute(prefix)


def _train_epoch(
    task: Task, loader: Loader, opt: Optimization, logger: Logger, settings: TrainerSettings, state: FitState
) -> tuple[dict[str, float], float, int]:
    for m in task.modules().values():
        m.train()
    epoch_acc, window = MeanAccumulator(), MeanAccumulator()
    start = time.perf_counter()
    for x, y in _limited(loader, settings.limit_train_batches):
        out = task.train_step((x, y), opt)
        opt.end_iteration()
        state.step += 1
        epoch_acc.add(out, len(x))
        window.add(out, len(x))
        logged = None
        # .item() syncs with the device: only every log_every_n_steps steps.
        if state.step % settings.log_every_n_steps == 0:
            logged = window.compute("train/")
            window = MeanAccumulator()
            _check_finite(logged, state.step)
        logger.step(state.step, logged)
    metrics = epoch_acc.compute("train/")
    elapsed = time.perf_counter() - start
    _check_finite(metrics, state.step)
    return metrics, elapsed, epoch_acc.count


def _check_finite(metrics: dict[str, float], step: int) -> None:
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        names = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteLossError(
            f"training diverged: {names} by step {step}. No checkpoint was written from this point. "
            f"Lower optimizer.lr, set trainer.grad_clip (e.g. 1.0), or use trainer.precision=32."
        )


def fit(
    task: Task,
    train_loader: Loader,
    val_loader: Loader,
    opt: Optimization,
    logger: Logger,
    settings: TrainerSettings,
    checkpoints: CheckpointManager,
    payload_fn: Callable[[FitState], dict[str, Any]],
    state: FitState | None = None,
) -> FitState:
    """Train from `state` (a fresh run when None) to `settings.max_epochs`; each epoch ends with
    validation, a metrics row, and last/best checkpoints written through `payload_fn(state)`."""
    state = state or FitState()
    while state.epoch < settings.max_epochs:
        epoch = state.epoch + 1  # epochs are counted from 1 in every output
        train_loader.set_epoch(epoch)
        logger.start_epoch(epoch, _num_batches(train_loader, settings.limit_train_batches))
        train_metrics, elapsed, samples = _train_epoch(task, train_loader, opt, logger, settings, state)
        val_metrics = evaluate(task, val_loader, opt.autocast, "val/", settings.limit_eval_batches)
        metrics = {
            **train_metrics, **val_metrics, **opt.learning_rates(),
            "time/epoch_s": elapsed, "train/samples_per_s": samples / elapsed if elapsed > 0 else 0.0,
        }
        opt.end_epoch(metrics)
        state.epoch = epoch
        state.history.append({"epoch": epoch, "step": state.step, **metrics})
        checkpoints.update(lambda: payload_fn(state), metrics, epoch)
        logger.end_epoch(epoch, state.step, metrics)
        logger.images(epoch, task.epoch_images())
    return state


def _num_batches(loader: Loader, limit: int | None) -> int:
    return len(loader) if limit is None else min(len(loader), limit)
