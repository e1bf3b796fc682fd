"""`trainkit profile [overrides]`: where the time of the run `trainkit train` would make goes. It runs that run, cut to
`profile.warmup + profile.steps` steps of one epoch, its validation (`profile.val_batches`) and its checkpoint, in its
own directory (outputs/profile/DATE/TIME) under torch.profiler, and prints the time by phase, samples/s and the
model's FLOP/s against the device's measured peak; profile.json has the figures, trace.json the profiler's trace.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from rich.table import Table

from trainkit import build
from trainkit.commands import Context
from trainkit.engine import profiling, tuning
from trainkit.logging.text import shown
from trainkit.trainer import Callback

# What each phase holds, in the order of a step (engine/profiling.py marks them).
SHOWN = {"data": "data (cut, convert, move a batch)", "step": "forward (the task's step: forward, loss, metrics)",
         "backward": "backward", "optimizer": "optimizer (zero_grad, step, scheduler, EMA)",
         "logging": "logging (metrics, progress, trackers, callbacks)", "validation": "validation",
         "checkpoint": "checkpoint", "other": "the rest (the loop's own bookkeeping)"}
AMP = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass
class ProfileOptions:
    steps: int = 50
    warmup: int = 5
    val_batches: int = 10
    peak_seconds: float = 0.5


def options(cfg: Any) -> ProfileOptions:
    values = build.to_dict(cfg.profile, "profile") if cfg.get("profile") is not None else {}
    opts = ProfileOptions(**values)
    opts.steps = build.whole_number(opts.steps, "profile.steps", minimum=1, example=50)
    opts.warmup = build.whole_number(opts.warmup, "profile.warmup", minimum=0, example=5)
    opts.val_batches = build.whole_number(opts.val_batches, "profile.val_batches", minimum=1, example=10)
    seconds = opts.peak_seconds
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 60:
        from trainkit.errors import ConfigError

        raise ConfigError(f"profile.peak_seconds={seconds} must be a number of seconds above 0 and at most 60: how "
                          f"long the matmul benchmark runs, e.g. profile.peak_seconds=0.5.")
    return opts


class _Window(Callback):
    """Starts the phase timers and the profiler after the warm-up steps and stops them when the fit ends."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.device = torch.device("cpu")
        self.profiler: Any = None
        self.times: profiling.PhaseTimes | None = None
        self.began = self.last_step = 0.0
        self.steps = 0

    def _begin(self) -> None:
        with _kineto_quiet():
            self.profiler.start()
        self.times = profiling.start(self.device)
        self.began = time.perf_counter()

    def on_fit_start(self, trainer: Any) -> None:
        self.device = _device(trainer)
        cuda = [torch.profiler.ProfilerActivity.CUDA] if self.device.type == "cuda" else []
        self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, *cuda])
        if self.warmup == 0:
            self._begin()

    def on_step_end(self, trainer: Any, step: int, metrics: Any) -> None:
        if self.times is not None:
            self.steps += 1
            self.last_step = time.perf_counter()
        elif step == self.warmup:
            self._begin()

    def on_fit_end(self, trainer: Any) -> None:
        profiling.stop()
        if self.times is not None:
            with _kineto_quiet():
                self.profiler.stop()


@contextmanager
def _kineto_quiet() -> Iterator[None]:
    """torch.profiler's C++ half (Kineto) prints its stages on the process's standard error whatever its log level
    ("USDT: profiler_start", "gpuGetDeviceCount failed" on a machine without a GPU): not for the user. Only the calls
    that start and stop it are silenced, at the file descriptor, where Python cannot."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _device(trainer: Any) -> torch.device:
    return next((p.device for m in trainer.task.modules().values() for p in m.parameters()), torch.device("cpu"))


def run_profile(cfg: Any, ctx: Context) -> dict[str, Any]:
    opts = options(cfg)
    recipe = build.plain(cfg)
    recipe.pop("profile", None)
    recipe["resume"] = None  # a profile never continues (or writes into) a training run
    recipe["trainer"] = {**recipe.get("trainer", {}), "max_epochs": 1, "devices": 1,
                         "limit_train_batches": opts.warmup + opts.steps, "limit_eval_batches": opts.val_batches}
    window = _Window(opts.warmup)
    trainer = build.build_trainer(recipe, ctx.run_dir, callbacks=(*ctx.callbacks, window), console=ctx.console)
    if len(trainer.data.train) < opts.warmup + opts.steps:
        from trainkit.errors import ConfigError

        trainer.close()
        raise ConfigError(f"profile.warmup + profile.steps = {opts.warmup + opts.steps} steps, and one epoch of this "
                          f"data has {len(trainer.data.train)}: lower profile.steps (the profile is one epoch).")
    flops = _flops_per_step(trainer)
    try:
        trainer.fit()
    finally:
        trainer.close()
        profiling.stop()
    trace = ctx.run_dir / "trace.json"
    window.profiler.export_chrome_trace(str(trace))
    dtype = AMP.get(trainer.settings.precision, torch.float32)
    peak = profiling.peak_matmul_flops(window.device, dtype, opts.peak_seconds)
    result = {**_result(trainer, window, flops, peak, dtype, trace), "options": asdict(opts)}
    (ctx.run_dir / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
    _print(ctx, result, opts)
    return result


def _flops_per_step(trainer: Any) -> int:
    """FLOPs of one training step (forward and backward, as torch's counter counts them) on a copy of the start
    state, which is put back: the profiled run is the run as it would start."""
    opt = tuning.plain_optimization(trainer.opt)
    start = tuning.StartState(trainer.task, opt)
    batch = next(iter(tuning.with_batch_size(trainer.data.train, trainer.data.train.batch_size)))
    try:
        return profiling.count_flops(lambda: trainer.task.train_step(batch, opt))
    finally:
        start.restore()


def _result(trainer: Any, window: _Window, flops: int, peak: float, dtype: torch.dtype,
            trace: Any) -> dict[str, Any]:
    times = window.times or profiling.PhaseTimes()
    seconds = dict(times.seconds)
    seconds["other"] = max(0.0, times.wall - sum(seconds.values()))
    train_s = window.last_step - window.began
    samples = window.steps * trainer.data.train.batch_size
    achieved = flops * window.steps / train_s if train_s > 0 else 0.0
    return {"device": str(window.device), "steps": window.steps, "batch_size": trainer.data.train.batch_size,
            "wall_s": times.wall, "phases_s": seconds, "phase_counts": times.counts,
            "train_s": train_s, "samples_per_s": samples / train_s if train_s > 0 else 0.0,
            "flops_per_step": flops, "achieved_flops_per_s": achieved, "peak_flops_per_s": peak,
            "peak_dtype": str(dtype).removeprefix("torch."), "share_of_peak": achieved / peak if peak else 0.0,
            "trace": str(trace)}


def _print(ctx: Context, result: dict[str, Any], opts: ProfileOptions) -> None:
    table = Table(title=f"trainkit profile: {result['steps']} steps at batch {result['batch_size']} on "
                        f"{result['device']}, then validation ({opts.val_batches} batches) and a checkpoint")
    for column in ("phase", "seconds", "share", "ms per step"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    wall, steps = result["wall_s"], max(result["steps"], 1)
    for name, label in SHOWN.items():
        value = result["phases_s"].get(name)
        if value is None:
            continue
        table.add_row(label, f"{value:.3f}", f"{value / wall:.1%}" if wall else "", f"{1000 * value / steps:.2f}")
    table.add_row("[bold]all[/bold]", f"{wall:.3f}", "100.0%", f"{1000 * wall / steps:.2f}")
    console = ctx.console
    console.print(table)
    console.print(f"training: {result['samples_per_s']:,.0f} samples/s; {result['flops_per_step'] / 1e9:.3g} GFLOP per "
                  f"step (forward and backward) → {result['achieved_flops_per_s'] / 1e9:.3g} GFLOP/s, "
                  f"{result['share_of_peak']:.1%} of this device's measured {result['peak_dtype']} matmul peak "
                  f"({result['peak_flops_per_s'] / 1e9:.3g} GFLOP/s)", highlight=False)
    console.print(f"trace: {shown(result['trace'])} (open it in https://ui.perfetto.dev or chrome://tracing)",
                  highlight=False)
    console.print(f"figures: {shown(ctx.run_dir / 'profile.json')}", highlight=False)
