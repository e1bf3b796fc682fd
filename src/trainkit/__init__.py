"""trainkit: a config-driven PyTorch training CLI. Importing it has no side effects and does not import torch.

The Python API (trainkit/api.py) is imported when first called: `trainkit.train([...])`, `trainkit.load(path)`.
Components of your own register by name (trainkit/registry.py): `@trainkit.register_model("my_net")`.
"""

from __future__ import annotations

from typing import Any

from trainkit.registry import (register_dataset, register_model, register_optimizer, register_scheduler,
                               register_task)

__version__ = "0.1.0"
__all__ = ["train", "load", "register_model", "register_dataset", "register_task", "register_optimizer",
           "register_scheduler"]


def train(overrides: Any = (), callbacks: Any = ()) -> dict[str, Any]:
    """Run `trainkit train OVERRIDES` in this process and return its summary (see trainkit.api.train)."""
    from trainkit.api import train as _train

    return _train(overrides, callbacks)


def load(checkpoint: Any, device: str | None = None, plugins: Any = ()) -> Any:
    """A trained model from its checkpoint alone, for raw inputs (see trainkit.api.load)."""
    from trainkit.api import load as _load

    return _load(checkpoint, device, plugins)
