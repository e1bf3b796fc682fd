"""Mixed precision and optimizer stepping through one code path for every device and task.

A disabled autocast is a `nullcontext()` and a disabled GradScaler is a no-op, so no task or loop has
an `if amp:` twin of its step. Tasks call `opt.step(name, loss)`; the loop calls `end_iteration()`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ContextManager

import torch
from torch import Tensor

from trainkit.engine.profiling import phase

_AMP_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass
class Precision:
    """What `trainer.precision` means on a given device."""

    mode: str  # "32", "bf16-mixed" or "16-mixed"
    device: torch.device

    def autocast(self) -> ContextManager[Any]:
        dtype = _AMP_DTYPES.get(self.mode)
        if dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        # Only fp16 underflows without loss scaling; bf16 has float32's range.
        return torch.amp.GradScaler(self.device.type, enabled=self.mode == "16-mixed")


@dataclass
class Optimization:
    """The named optimizers of a task, their schedulers, one GradScaler, clipping, gradient accumulation
    and an optional EMA of the weights."""

    optimizers: dict[str, torch.optim.Optimizer]
    precision: Precision
    # name → LR scheduler, stepped after every optimizer update; ReduceLROnPlateau at epoch ends on `monitor`
    schedulers: dict[str, Any] = field(default_factory=dict)
    grad_clip: float | None = None  # max global L2 norm
    skip_nonfinite: bool = False  # trainer.on_nan=skip: drop the update of a step whose loss is NaN/inf
    accumulate: int = 1  # batches whose gradients are summed before one update (cycles run across epochs)
    monitor: str = "val/loss"  # what ReduceLROnPlateau watches
    ema: Any = None  # trainkit.engine.ema.EMA, updated after every optimizer update
    scaler: torch.amp.GradScaler = None  # type: ignore[assignment]
    skipped_steps: int = 0  # updates dropped by skip_nonfinite since the last take_skipped()
    micro: int = 0  # batches seen in the current accumulation cycle
    _stepped: bool = False

    def __post_init__(self) -> None:
        if self.scaler is None:
            self.scaler = self.precision.grad_scaler()

    def autocast(self) -> ContextManager[Any]:
        return self.precision.autocast()

    @property
    def _updating(self) -> bool:
        return self.micro + 1 >= self.accumulate  # this batch completes a cycle

    def step(self, name: str, loss: Tensor) -> None:
        """Scaled backward of `loss` for the optimizer called `name`; on the last batch of an accumulation
        cycle also unscale, clip and step it. Gradients are zeroed at the start of each cycle."""
        optimizer = self.optimizers[name]
        if self.micro == 0:
            with phase("optimizer"):
                optimizer.zero_grad(set_to_none=True)
        # Skipping needs the loss on the host: a sync per step, paid only when on_nan=skip.
        if self.skip_nonfinite and not torch.isfinite(loss.detach()).item():
            self.skipped_steps += 1
            return
        with phase("backward"):
            self.scaler.scale(loss / self.accumulate if self.accumulate > 1 else loss).backward()
        if not self._updating:
            return
        with phase("optimizer"):
            if self.grad_clip is not None:
                self.scaler.unscale_(optimizer)
                params = [p for group in optimizer.param_groups for p in group["params"]]
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            self.scaler.step(optimizer)
        self._stepped = True

    def end_iteration(self) -> None:
        """After each batch: once a cycle is complete, update the loss scale once (after every optimizer
        stepped, as the PyTorch AMP notes prescribe), step the schedulers and the EMA."""
        if not self._updating:
            self.micro += 1
            return
        self.micro = 0
        if self._stepped:
            with phase("optimizer"):
                self._after_update()

    def _after_update(self) -> None:
        self.scaler.update()
        self._stepped = False
        for scheduler in self.schedulers.values():
            if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step()
        if self.ema is not None:
            self.ema.update()

    def take_skipped(self) -> int:
        n, self.skipped_steps = self.skipped_steps, 0
        return n

    def end_epoch(self, metrics: dict[str, float]) -> None:
        for scheduler in self.schedulers.values():
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and self.monitor in metrics:
                scheduler.step(metrics[self.monitor])

    def learning_rates(self) -> dict[str, float]:
        return {f"lr/{name}": opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "micro": self.micro,
            # Mid-cycle, the summed gradients are part of the state: a resume must not lose them.
            "pending_grads": {k: [p.grad for p in self._params(o)] for k, o in self.optimizers.items()}
            if self.micro else {},
            "ema": None if self.ema is None else self.ema.state_dict(),
        }

    @staticmethod
    def _params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
        return [p for group in optimizer.param_groups for p in group["params"]]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.micro = state.get("micro", 0)
        for k, grads in state.get("pending_grads", {}).items():
            for p, g in zip(self._params(self.optimizers[k]), grads):
                p.grad = None if g is None else g.to(p.device)
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
