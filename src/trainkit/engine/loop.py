"""The generic training loop. It knows nothing of datasets, models or GANs: a Task says what a step is."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, ContextManager, Protocol

import torch
from torch import Tensor

from trainkit.engine import distributed
from trainkit.engine.optimization import Optimization
from trainkit.engine.profiling import phase
from trainkit.engine.settings import TrainerSettings
from trainkit.engine.signals import Interrupted
from trainkit.errors import ConfigError, UserError

if TYPE_CHECKING:  # the engine runs any Task; only its type is named here
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
    """Counters that a checkpoint carries so a resumed run continues exactly where it stopped."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimizer iterations
    batch: int = 0  # completed batches of the epoch in progress (epoch + 1); 0 at an epoch boundary
    partial: dict[str, Any] = field(default_factory=dict)  # that epoch's metric sums, count and seconds so far
    history: list[dict[str, float]] = field(default_factory=list)  # one metrics row per finished epoch
    early: dict[str, Any] = field(default_factory=dict)  # early stopping: best value and epochs without it
    stopped_early: bool = False


class MeanAccumulator:
    """Means over samples of a task's metrics, kept on the device: no host sync until `.compute()`. A metric is
    a 0-dim batch mean (weighted by the batch size) or a 1-D tensor of per-sample values (e.g. correct or not),
    whose ops per step stop at the comparison: the reduction is left to the flush.

    `add` only queues a batch's values; every `FLUSH_EVERY` batches the queue is summed with a few tensor ops per
    metric. Summing each batch as it came took a dozen small ops per training step, each a kernel launch on a GPU
    (benchmarks/README.md). The queue is part of `state_dict()`, so a resumed epoch sums in the same groups and
    its metrics are bitwise those of an uninterrupted one. Given each batch's `step`, it also finds the first step
    whose values were not finite, still without a host sync."""

    FLUSH_EVERY = 64
    _NONE = torch.iinfo(torch.long).max  # no non-finite step seen

    def __init__(self, sums: dict[str, Tensor] | None = None, count: int = 0,
                 pending: list[list[Any]] | None = None) -> None:
        self._sums: dict[str, Tensor] = dict(sums or {})
        self.count = count
        self._queue: list[tuple[dict[str, Tensor], int, int | None]] = [tuple(p) for p in pending or []]
        self._first_bad: Tensor | None = None

    def add(self, values: dict[str, Tensor], n: int, step: int | None = None) -> None:
        if any(v.requires_grad for v in values.values()):  # never keep a graph alive while queued
            values = {k: v.detach() for k, v in values.items()}
        self._queue.append((values, n, step))
        self.count += n
        if len(self._queue) >= self.FLUSH_EVERY:
            self._sums, self._first_bad = self._totals()
            self._queue = []

    @property
    def sums(self) -> dict[str, Tensor]:
        return self._totals()[0]

    @property
    def first_bad(self) -> Tensor | None:
        """The first added step with a NaN or infinite value (-1: none), on the device; None without steps."""
        first = self._totals()[1]
        return None if first is None else torch.where(first == self._NONE, -1, first)

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self._sums, "count": self.count, "pending": [list(q) for q in self._queue]}

    def _totals(self) -> tuple[dict[str, Tensor], Tensor | None]:
        """The sums and the first non-finite step with the queue folded in; the accumulator itself is unchanged."""
        sums, first_bad = dict(self._sums), self._first_bad
        for k in dict.fromkeys(k for values, _, _ in self._queue for k in values):
            rows = [(values[k], n, step) for values, n, step in self._queue if k in values]
            if rows[0][0].dim() == 1:  # per-sample values: their sum is already the samples' total
                total = torch.cat([v for v, _, _ in rows]).sum(dtype=torch.float32)
                sums[k] = sums[k] + total if k in sums else total
                continue
            col = torch.stack([v for v, _, _ in rows]).float()
            weights = [n for _, n, _ in rows]
            if len(set(weights)) == 1:  # the usual case: no weight vector to copy to the device
                total = col.sum() * weights[0]
            else:
                total = col @ torch.tensor(weights, dtype=col.dtype).to(col.device, non_blocking=True)
            sums[k] = sums[k] + total if k in sums else total
            if rows[0][2] is not None:
                steps = torch.tensor([step for _, _, step in rows]).to(col.device, non_blocking=True)
                first = torch.where(torch.isfinite(col), self._NONE, steps).min()
                first_bad = first if first_bad is None else torch.minimum(first_bad, first)
        return sums, first_bad

    def compute(self, prefix: str = "") -> dict[str, float]:
        """The means, over every rank's samples when data-parallel (one collective, one host sync)."""
        sums = self.sums
        if not sums:
            return {}
        first = next(iter(sums.values()))
        count = torch.tensor(float(self.count), device=first.device)
        *values, total = distributed.all_sum(torch.stack([*sums.values(), count])).cpu().tolist()
        return {f"{prefix}{k}": v / total for k, v in zip(sums, values)}


def evaluate(
    task: Task, loader: Loader, autocast: Callable[[], ContextManager[Any]] = nullcontext,
    prefix: str = "val/", limit: int | None = None, each_epoch: bool = False,
) -> dict[str, float]:
    """Mean of the task's eval metrics over the whole split (or `limit` batches), modules in eval mode.
    `each_epoch`: the validation inside training, through the task's `val_step` where it has one."""
    measure = getattr(task, "val_step", task.eval_step) if each_epoch else task.eval_step
    modes = {name: m.training for name, m in task.modules().items()}
    for m in task.modules().values():
        m.eval()
    acc = MeanAccumulator()
    loader.set_epoch(0)
    with torch.inference_mode(), _plugins_blamed(f"evaluating ({prefix.rstrip('/')} split)"):
        for x, y in islice(loader, num_batches(loader, limit)):
            with autocast():
                acc.add(measure((x, y)), len(x))
    for name, m in task.modules().items():
        m.train(modes[name])
    return acc.compute(prefix)


class _plugins_blamed:
    """What a plugin's code raises inside the loop (its task's train_step, its model's forward on real data) becomes
    a PluginError naming it and its line; trainkit's own errors and anything else pass as they are. Entered once
    around a whole loop: no cost per step."""

    def __init__(self, doing: str) -> None:
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, UserError):
            return False
        from trainkit import registry

        found = registry.blame(exc, self.doing)
        if found is not None:
            raise found from None
        return False


@dataclass
class Hooks:
    """What the loop calls out to besides the task: where state is saved, and whether to stop."""

    save_epoch: Callable[[dict[str, float]], None]  # after validation, with the epoch's metrics
    save_step: Callable[[], None]  # mid-epoch: every checkpoint_every_n_steps, and on a stop request
    stop_requested: Callable[[], int | None] = lambda: None  # a pending signal number, or None
    # event(name, *values): epoch_start (epoch), step_end (step, metrics or None), validation_start,
    # validation_end (metrics), epoch_end (epoch, metrics); the Trainer hands them to its callbacks.
    event: Callable[..., None] = lambda name, *values: None


def _train_epoch(task: Task, loader: Loader, opt: Optimization, logger: Logger, settings: TrainerSettings,
                 state: FitState, hooks: Hooks) -> tuple[dict[str, float], float, int]:
    for m in task.modules().values():
        m.train()
    epoch = state.epoch + 1
    num = num_batches(loader, settings.limit_train_batches)
    epoch_acc = MeanAccumulator(state.partial.get("sums"), state.partial.get("count", 0), state.partial.get("pending"))
    before = state.partial.get("seconds", 0.0)
    window = MeanAccumulator()
    loader.set_epoch(epoch, state.batch)
    logger.start_epoch(epoch, num)
    hooks.event("epoch_start", epoch)
    start = time.perf_counter()
    batches = iter(islice(loader, num - state.batch))
    while True:
        with phase("data"):  # the loader cuts, converts and moves each batch when it is asked for it
            batch = next(batches, None)
        if batch is None:
            break
        x, y = batch
        skipped = opt.skipped_steps
        with phase("step"):  # the task's forward pass and loss; backward and optimizer mark their own ranges
            out = task.train_step((x, y), opt)
            opt.end_iteration()
        state.step += 1
        state.batch += 1
        if opt.skipped_steps == skipped:  # on_nan=skip: a dropped update adds nothing to the metrics
            epoch_acc.add(out, len(x), state.step)  # with the step: it also finds the first non-finite one
            window.add(out, len(x))
        with phase("logging"):
            logged = None
            # .item() syncs with the device: only every log_every_n_steps steps.
            if state.step % settings.log_every_n_steps == 0:
                logged = window.compute("train/")
                window = MeanAccumulator()
                _check_finite(logged, epoch_acc)
            logger.step(state.step, logged)
            hooks.event("step_end", state.step, logged)
        every = settings.checkpoint_every_n_steps
        signum = hooks.stop_requested()
        if signum is not None or (every and state.step % every == 0 and state.batch < num):
            _check_finite(epoch_acc.compute("train/"), epoch_acc)  # never save after a NaN
            state.partial = {**epoch_acc.state_dict(), "seconds": before + time.perf_counter() - start}
            with phase("checkpoint"):
                hooks.save_step()
            if signum is not None:
                raise _interrupted(signum, state)
    metrics = epoch_acc.compute("train/")
    elapsed = before + time.perf_counter() - start
    _check_finite(metrics, epoch_acc)
    state.batch, state.partial = 0, {}
    return metrics, elapsed, epoch_acc.count


def _interrupted(signum: int, state: FitState) -> Interrupted:
    import signal

    name = signal.Signals(signum).name
    where = f"epoch {state.epoch + 1}, batch {state.batch}" if state.batch else f"the end of epoch {state.epoch}"
    return Interrupted(f"stopped by {name} at {where} (step {state.step}); the checkpoint to resume from is saved.",
                       signum)


def _step(first_bad: Tensor | None) -> str:
    step = -1 if first_bad is None else int(first_bad)  # a host sync, on the failure path only
    return str(step) if step >= 0 else "(before this session)"


def _check_finite(metrics: dict[str, float], acc: MeanAccumulator) -> None:
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        first_bad = acc.first_bad
        names = ", ".join(f"train/{k.split('/')[-1]}" for k in bad)
        raise NonFiniteLossError(
            f"training diverged: {names} became {'/'.join(sorted({str(v) for v in bad.values()}))} at step "
            f"{_step(first_bad)}. No checkpoint was written from that step on. "
            f"Lower optimizer.lr, set trainer.grad_clip (e.g. 1.0), use trainer.precision=32, or "
            f"trainer.on_nan=skip to skip the updates of such steps."
        )


def fit(
    task: Task,
    train_loader: Loader,
    val_loader: Loader,
    opt: Optimization,
    logger: Logger,
    settings: TrainerSettings,
    hooks: Hooks,
    state: FitState | None = None,
    until: int | None = None,
) -> FitState:
    """Train from `state` (a fresh run when None; any saved position, mid-epoch included) to `until` completed
    epochs (default `settings.max_epochs`). Each epoch ends with validation, a metrics row and `hooks.save_epoch`."""
    state = state or FitState()
    end = settings.max_epochs if until is None else min(until, settings.max_epochs)
    hooks.stop_requested()  # asked once now: from here a stop signal finishes the step and saves (engine/signals.py)
    with _plugins_blamed("training"):
        while state.epoch < end and not state.stopped_early:
            train_metrics, elapsed, samples = _train_epoch(task, train_loader, opt, logger, settings, state, hooks)
            hooks.event("validation_start")
            with phase("validation"), opt.ema.swapped() if opt.ema is not None else nullcontext():  # the averages
                val_metrics = evaluate(task, val_loader, opt.autocast, "val/", settings.limit_eval_batches,
                                       each_epoch=True)
            hooks.event("validation_end", val_metrics)
            metrics = {
                **train_metrics, **val_metrics, **opt.learning_rates(),
                "time/epoch_s": elapsed, "train/samples_per_s": samples / elapsed if elapsed > 0 else 0.0,
            }
            if opt.skipped_steps:
                metrics["train/skipped_steps"] = float(opt.take_skipped())
            opt.end_epoch(metrics)
            state.epoch += 1
            state.history.append({"epoch": state.epoch, "step": state.step, **metrics})
            state.stopped_early = _early_stop(state, metrics, settings, task)
            with phase("checkpoint"):
                hooks.save_epoch(metrics)
            with phase("logging"):
                logger.end_epoch(state.epoch, state.step, metrics)
                logger.images(state.epoch, task.epoch_images())
                hooks.event("epoch_end", state.epoch, state.history[-1])
            signum = hooks.stop_requested()
            if signum is not None and state.epoch < settings.max_epochs:
                raise _interrupted(signum, state)
    return state


def _early_stop(state: FitState, metrics: dict[str, float], settings: TrainerSettings, task: Task) -> bool:
    """True when the monitored metric has not improved by min_delta for `patience` epochs."""
    es = settings.early_stopping
    if es.patience is None:
        return False
    monitor = es.monitor or task.monitor
    mode = es.mode or (task.monitor_mode if monitor == task.monitor else "min")
    if monitor not in metrics:
        raise ConfigError(f"trainer.early_stopping.monitor={monitor} is not a metric of this run; "
                          f"its metrics are: {', '.join(sorted(metrics))}.")
    value, best = metrics[monitor], state.early.get("best")
    sign = 1.0 if mode == "max" else -1.0
    if math.isfinite(value) and (best is None or sign * (value - best) > es.min_delta):
        state.early = {"best": value, "bad_epochs": 0}
        return False
    state.early = {"best": best, "bad_epochs": state.early.get("bad_epochs", 0) + 1}
    return state.early["bad_epochs"] >= es.patience


def num_batches(loader: Loader, limit: float | None) -> int:
    """How many batches a pass takes: all, `limit` of them (>= 1), or that fraction of them (< 1)."""
    n = len(loader)
    if limit is None:
        return n
    return max(1, int(n * limit)) if limit < 1 else min(n, int(limit))
