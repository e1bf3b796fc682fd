"""trainkit's own learning-rate schedulers (configs/scheduler/): durations in epochs, the run's length known.

Each is a factory `(optimizer, <what build passes>, **scheduler keys)`, registered by name like any scheduler: build
passes `steps_per_epoch` (optimizer updates per epoch), `total_steps` (updates after any warm-up) and `monitor_mode`
(the task's min or max) where the signature asks for them. Each returns a torch scheduler stepped after every
optimizer update (ReduceLROnPlateau: after every epoch), or None for a constant rate. A warm-up
(scheduler.warmup_epochs) is build's to add in front of any of them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import lr_scheduler


def none(optimizer: torch.optim.Optimizer) -> None:
    """A constant learning rate."""
    return None


def step(optimizer: torch.optim.Optimizer, steps_per_epoch: int, step_size: float = 10,
         gamma: float = 0.1) -> lr_scheduler.StepLR:
    """The rate times gamma every step_size epochs (fractions allowed: at least one optimizer update)."""
    if isinstance(step_size, bool) or not step_size > 0:  # also NaN; torch divides by it only at the first step
        raise ValueError(f"scheduler.step_size={step_size} must be a number of epochs above 0, e.g. 10 or 0.5")
    return lr_scheduler.StepLR(optimizer, max(1, round(step_size * steps_per_epoch)), gamma=gamma)


def cosine(optimizer: torch.optim.Optimizer, total_steps: int, eta_min: float = 0.0) -> lr_scheduler.CosineAnnealingLR:
    """Cosine decay from optimizer.lr to eta_min over the run."""
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps), eta_min=eta_min)


def onecycle(optimizer: torch.optim.Optimizer, total_steps: int, max_lr: float | None = None,
             **keys: Any) -> lr_scheduler.OneCycleLR:
    """The one-cycle policy over the whole run; max_lr null: optimizer.lr. Other keys are OneCycleLR's own
    (pct_start, anneal_strategy, div_factor, final_div_factor, ...)."""
    return lr_scheduler.OneCycleLR(optimizer, total_steps=total_steps, max_lr=max_lr or optimizer.param_groups[0]["lr"],
                                   **keys)


def plateau(optimizer: torch.optim.Optimizer, monitor_mode: str, mode: str | None = None,
            **keys: Any) -> lr_scheduler.ReduceLROnPlateau:
    """The rate times factor when the task's monitored metric stalls for patience epochs; mode null: the direction
    of that metric. Other keys are ReduceLROnPlateau's own (factor, patience, threshold, ...)."""
    return lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode or monitor_mode, **keys)
