"""Phases of a run (data, the training step, backward, optimizer, logging, validation, checkpoint) as named ranges:
free when nobody measures, timed and shown in torch.profiler's trace while `trainkit profile` (or a benchmark)
records. The phase marks live in the loop and the optimization; what to do with the times is the caller's.

A range's time is its own, without the ranges inside it: the training step's range holds the backward and the
optimizer's ranges, so "step" is what is left of it (the forward pass, the loss and the metrics). On a GPU the
recorder synchronizes at every mark, so each range holds its kernels' time rather than their launches'.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

PHASES = ("data", "step", "backward", "optimizer", "logging", "validation", "checkpoint")
_OFF = nullcontext()  # reusable: a phase costs one call and one test when nothing records


@dataclass
class PhaseTimes:
    """Seconds and counts per phase (each range's own time, ranges inside it left out)."""

    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    wall: float = 0.0  # seconds from start() to stop()

    def share(self, name: str) -> float:
        return self.seconds.get(name, 0.0) / self.wall if self.wall > 0 else 0.0


class _Recorder:
    def __init__(self, sync: Callable[[], None] | None, trace: bool) -> None:
        self.sync, self.trace = sync, trace
        self.times = PhaseTimes()
        self.stack: list[str] = []
        self.mark = self.started = time.perf_counter()

    def _now(self) -> float:
        if self.sync is not None:
            self.sync()
        return time.perf_counter()

    def enter(self, name: str) -> None:
        now = self._now()
        if self.stack:  # the enclosing range pauses
            top = self.stack[-1]
            self.times.seconds[top] = self.times.seconds.get(top, 0.0) + now - self.mark
        self.stack.append(name)
        self.times.counts[name] = self.times.counts.get(name, 0) + 1
        self.mark = now

    def exit(self) -> None:
        now = self._now()
        top = self.stack.pop()
        self.times.seconds[top] = self.times.seconds.get(top, 0.0) + now - self.mark
        self.mark = now


_active: _Recorder | None = None


def phase(name: str) -> Any:
    """A context for one phase of the run: nothing at all unless a recorder is on."""
    if _active is None:
        return _OFF
    return _timed(_active, name)


@contextmanager
def _timed(rec: _Recorder, name: str) -> Iterator[None]:
    ranged = torch.profiler.record_function(f"trainkit/{name}") if rec.trace else _OFF
    rec.enter(name)
    try:
        with ranged:
            yield
    finally:
        rec.exit()


def start(device: torch.device | None = None, trace: bool = True) -> PhaseTimes:
    """Time the phases from now on (one recorder at a time); `trace`: also mark them as torch.profiler ranges.
    The times are complete after `stop()`."""
    global _active
    if _active is not None:
        raise RuntimeError("phases are already being recorded")
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else None
    _active = _Recorder(sync, trace)
    return _active.times


def stop() -> None:
    global _active
    if _active is not None:
        rec, _active = _active, None
        rec.times.wall = rec._now() - rec.started


@contextmanager
def recording(device: torch.device | None = None, trace: bool = True) -> Iterator[PhaseTimes]:
    """`start()` and `stop()` around a block."""
    times = start(device, trace)
    try:
        yield times
    finally:
        stop()


def peak_matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, seconds: float = 0.5) -> float:
    """The device's measured peak: FLOP/s of the best of several square matmuls of `dtype` (2·n³ each), a size
    that keeps every core busy. What a model's FLOP/s is measured against."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    (a @ b).sum()  # the first call picks kernels and allocates
    sync()
    best, spent = 0.0, 0.0
    while spent < seconds:
        start = time.perf_counter()
        a @ b
        sync()
        took = time.perf_counter() - start
        spent += took
        best = max(best, 2 * n**3 / took)
    return best


def count_flops(fn: Callable[[], Any]) -> int:
    """The floating-point operations `fn()` runs through torch's counted ops (matmuls, convolutions: the ones
    that matter), forward and backward, as torch.utils.flop_counter counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
