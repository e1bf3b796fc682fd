"""Finding a learning rate and a batch size before training (`trainkit tune`): a learning-rate range test and a
batch-size finder, both on a copy of the start state that is put back after every trial. They run any task through
its own `train_step`; what is a good rate or size is decided here, what to build and print is the command's.
"""

from __future__ import annotations

import copy
import gc
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from trainkit.engine.optimization import Optimization
from trainkit.errors import ConfigError

class TuneError(ConfigError):
    """A tuning request that cannot work for this task or these settings; the message names the key."""


# --------------------------------------------------------------------------------------------- the start state
class StartState:
    """A copy of the modules' weights, the optimizers' and the loss scaler's states, and the RNG, taken once: every
    trial starts from it, and `restore()` leaves the objects as they were before the first one."""

    def __init__(self, task: Any, opt: Optimization) -> None:
        from trainkit.engine.rng import rng_state

        self.task, self.opt = task, opt
        self.modules = {k: copy.deepcopy(m.state_dict()) for k, m in task.modules().items()}
        self.optimizers = {k: copy.deepcopy(o.state_dict()) for k, o in opt.optimizers.items()}
        self.scaler = copy.deepcopy(opt.scaler.state_dict())
        self.rng = rng_state()

    def restore(self) -> None:
        from trainkit.engine.rng import set_rng_state

        for k, m in self.task.modules().items():
            m.load_state_dict(self.modules[k])
        for k, o in self.opt.optimizers.items():
            o.load_state_dict(self.optimizers[k])
            o.zero_grad(set_to_none=True)
        if self.scaler:
            self.opt.scaler.load_state_dict(self.scaler)
        self.opt.micro = 0
        set_rng_state(self.rng)


def plain_optimization(opt: Optimization) -> Optimization:
    """The same optimizers, precision and clipping, without what would move the learning rate or the weights behind
    the sweep's back: no schedulers, no EMA, one batch per update."""
    return replace(opt, schedulers={}, ema=None, accumulate=1, micro=0, skipped_steps=0)


def batches(loader: Any) -> Iterator[Any]:
    """The loader's batches, epoch after epoch, for as long as they are asked for."""
    epoch = 1
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


# ------------------------------------------------------------------------------------------ the range test
@dataclass
class RangeTest:
    """The loss at each learning rate of the sweep, smoothed, and the rate it suggests."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    stopped: str = ""  # why the sweep ended
    suggestion: float | None = None  # the rate at the steepest descent of the smoothed loss
    steepest: int | None = None  # its index in `lrs`


def lr_schedule(lr_min: float, lr_max: float, steps: int) -> list[float]:
    """`steps` rates from lr_min to lr_max, each the one before times the same factor."""
    if steps == 1:
        return [lr_min]
    return [lr_min * (lr_max / lr_min) ** (i / (steps - 1)) for i in range(steps)]


def smooth(losses: list[float], beta: float) -> list[float]:
    """An exponential moving average with weight `beta` on the past, debiased (the first values are not pulled
    towards 0): what fastai and Lightning plot."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def steepest_descent(lrs: list[float], smoothed: list[float], skip: float = 0.1) -> int | None:
    """The index where the smoothed loss falls fastest per factor of the learning rate (the most negative slope
    against log lr), looked for after the first `skip` of the points (the smoothing's start-up) and before the
    lowest loss (past it the rate is already too high). None: the loss never fell."""
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    start = min(int(len(smoothed) * skip), max(lowest - 1, 0))
    best, found = 0.0, None
    for i in range(max(start, 1), lowest + 1):
        slope = (smoothed[i] - smoothed[i - 1]) / (math.log(lrs[i]) - math.log(lrs[i - 1]))
        if slope < best:
            best, found = slope, i
    return found


def one_loss(task: Any, opt: Optimization) -> None:
    """The range test sweeps one optimizer's learning rate against one loss; a task with several (a GAN's two
    adversarial losses) has no such curve."""
    if len(opt.optimizers) != 1:
        raise TuneError(f"tune.mode=lr: the learning-rate range test sweeps one optimizer's rate against one loss, and "
                        f"this task ({type(task).__name__}) steps {len(opt.optimizers)} optimizers "
                        f"({', '.join(opt.optimizers)}) whose losses work against each other, so no loss curve picks "
                        f"a rate. Use tune.mode=batch, and tune the rates by a sweep of short runs (trainkit train "
                        f"-m optimizer.lr=...).")


def lr_range_test(task: Any, loader: Any, opt: Optimization, lrs: list[float], beta: float,
                  diverge: float) -> RangeTest:
    """Train one step at each rate of `lrs` (set on every parameter group), reading the task's `loss` after each;
    stop where the smoothed loss exceeds `diverge` times its lowest, or is not finite."""
    one_loss(task, opt)
    (optimizer,) = opt.optimizers.values()
    result = RangeTest(stopped=f"reached the last rate ({lrs[-1]:.3g})")
    for m in task.modules().values():
        m.train()
    for lr, batch in zip(lrs, batches(loader)):
        for group in optimizer.param_groups:
            group["lr"] = lr
        out = task.train_step(batch, opt)
        opt.end_iteration()
        if "loss" not in out:
            raise TuneError(f"tune.mode=lr: this task's train_step returns {', '.join(out)} and no 'loss' to follow. "
                            f"Use tune.mode=batch.")
        loss = float(out["loss"])  # a host sync per step: the sweep is short, and each rate needs its loss
        if not math.isfinite(loss):
            result.stopped = f"the loss became {loss} at lr {lr:.3g}"
            break
        result.lrs.append(lr)
        result.losses.append(loss)
        result.smoothed = smooth(result.losses, beta)
        if len(result.smoothed) > 1 and result.smoothed[-1] > diverge * min(result.smoothed):
            result.stopped = f"the smoothed loss passed {diverge:g}× its lowest at lr {lr:.3g}"
            break
    if len(result.lrs) >= 3:
        result.steepest = steepest_descent(result.lrs, result.smoothed)
        result.suggestion = None if result.steepest is None else result.lrs[result.steepest]
    return result


# ------------------------------------------------------------------------------------------ the batch finder
def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (isinstance(exc, RuntimeError)
                                                            and "out of memory" in str(exc).lower())


def largest_fitting(fits: Callable[[int], bool], start: int, cap: int) -> int | None:
    """The largest batch size up to `cap` for which `fits(size)`: doubling from `start` until one does not fit,
    then bisecting between the last that fit and the first that did not (halving first where `start` does not).
    None: not even a batch of 1 fits."""
    lo, hi = min(start, cap), None
    while not fits(lo):
        if lo == 1:
            return None
        hi, lo = lo, max(1, lo // 2)
    while hi is None and lo < cap:
        size = min(2 * lo, cap)
        if fits(size):
            lo = size
        else:
            hi = size
    while hi is not None and hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def powers_of_two(cap: int, smallest: int = 8) -> list[int]:
    sizes, size = [], smallest
    while size <= cap:
        sizes.append(size)
        size *= 2
    return sizes or [cap]


def timed_steps(task: Any, loader: Any, opt: Optimization, steps: int, sync: Callable[[], None]) -> float:
    """Seconds of `steps` training steps after one untimed step (which allocates and picks kernels)."""
    for m in task.modules().values():
        m.train()
    it = batches(loader)
    task.train_step(next(it), opt)
    opt.end_iteration()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        task.train_step(next(it), opt)
        opt.end_iteration()
    sync()
    return time.perf_counter() - start


def with_batch_size(loader: Any, size: int) -> Any:
    """The same loader (the same split, already where it lives) cutting batches of `size`."""
    resized = copy.copy(loader)
    resized.batch_size = size
    return resized


def fits(task: Any, train: Any, val: Any, opt: Optimization, device: torch.device) -> bool:
    """Whether two training steps on `train`'s batches and one validation step on `val`'s fit in the device's memory
    (the second step holds the optimizer's state beside the gradients, as every later one does)."""
    try:
        timed_steps(task, train, opt, 1, lambda: torch.cuda.synchronize(device) if device.type == "cuda" else None)
        with torch.inference_mode():
            for m in task.modules().values():
                m.eval()
            val.set_epoch(0)
            task.eval_step(next(iter(val)))
        return True
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        return False
    finally:
        free_memory(device)


def free_memory(device: torch.device) -> None:
    """What a failed or finished trial allocated, back to the device before the next one."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
