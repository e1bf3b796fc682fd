"""The seam that keeps the loop generic: a task owns its modules, losses, metrics and update order."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from torch import Tensor, nn

if TYPE_CHECKING:
    from trainkit.engine.optimization import Optimization

Batch = tuple[Tensor, Tensor]


class Task(Protocol):
    monitor: str  # validation metric that picks the best checkpoint, e.g. "val/acc"
    monitor_mode: str  # "max" or "min"

    def modules(self) -> dict[str, nn.Module]:
        """What to move to the device, checkpoint, and switch between train() and eval()."""

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Data-parallel training: run the training step through `wrap(module)` (DDP); `modules()` keeps
        returning the plain modules, so checkpoints look the same with or without it."""

    def param_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        """One optimizer is built per entry; `train_step` steps them by these names."""

    def train_step(self, batch: Batch, opt: Optimization) -> dict[str, Tensor]:
        """Step the optimizers; return detached metrics: 0-dim batch means ({"loss": ...}) or 1-D per-sample
        values ({"acc": pred == y}), which save the per-step reduction."""

    def eval_step(self, batch: Batch) -> dict[str, Tensor]:
        """Return the validation metrics, as train_step does: 0-dim batch means or 1-D per-sample values."""

    def epoch_images(self) -> dict[str, Tensor]:
        """Images to keep after each epoch (name → C×H×W in [0, 1]); most tasks return {}."""
