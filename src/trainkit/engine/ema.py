"""An exponential moving average of a task's weights, for evaluation and the saved checkpoints.

torch.optim.swa_utils.AveragedModel keeps the average; `swapped()` puts it into the live modules for
validation, testing and saving, and puts the training weights back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class EMA:
    def __init__(self, modules: dict[str, nn.Module], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"trainer.ema_decay={decay} must be between 0 and 1 (e.g. 0.999).")
        self.modules = modules
        self.averages = {
            name: AveragedModel(m, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
            for name, m in modules.items()
        }

    @torch.no_grad()
    def update(self) -> None:
        for name, module in self.modules.items():
            self.averages[name].update_parameters(module)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """The averaged weights in the live modules inside the block; the training weights after it."""
        saved = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in self.modules.items()}
        for name, m in self.modules.items():
            m.load_state_dict(self.averages[name].module.state_dict())
        try:
            yield
        finally:
            for name, m in self.modules.items():
                m.load_state_dict(saved[name])

    def state_dict(self) -> dict[str, Any]:
        return {name: avg.state_dict() for name, avg in self.averages.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, avg in self.averages.items():
            avg.load_state_dict(state[name])
