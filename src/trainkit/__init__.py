"""trainkit: a config-driven PyTorch training CLI. Importing it has no side effects and does not import torch.

The Python API (trainkit/api.py) is imported when first called: `trainkit.train([...])` runs `trainkit train` in this
process, `trainkit.make_trainer(data=..., model=...)` builds a Trainer with no config file, `trainkit.load(path)` gives
a trained model back, `trainkit.runs(folder)` reads runs as a pandas DataFrame. `trainkit.Trainer` and
`trainkit.Callback` are the Trainer's classes (trainkit/trainer.py). Components of your own register by name
(trainkit/registry.py): `@trainkit.register_model("my_net")`.
"""

from __future__ import annotations

from typing import Any

from trainkit.registry import (register_cluster, register_dataset, register_model, register_optimizer,
                               register_scheduler, register_task, register_tracker)
from trainkit.version import __version__

__all__ = ["__version__", "train", "make_trainer", "load", "runs", "Trainer", "Callback", "register_model", "register_dataset",
           "register_task", "register_optimizer", "register_scheduler", "register_tracker", "register_cluster"]


def train(overrides: Any = (), callbacks: Any = ()) -> dict[str, Any]:
    """Run `trainkit train OVERRIDES` in this process and return its summary (see trainkit.api.train)."""
    from trainkit.api import train as _train

    return _train(overrides, callbacks)


def make_trainer(run_dir: Any = None, **components: Any) -> Any:
    """A Trainer of registered components chosen by name with keyword arguments (see trainkit.api.make_trainer)."""
    from trainkit.api import make_trainer as _make_trainer

    return _make_trainer(run_dir, **components)


def load(checkpoint: Any, device: str | None = None, plugins: Any = ()) -> Any:
    """A trained model from its checkpoint alone, for raw inputs (see trainkit.api.load)."""
    from trainkit.api import load as _load

    return _load(checkpoint, device, plugins)


def runs(path: Any = "outputs") -> Any:
    """The runs under a folder as a pandas DataFrame (see trainkit.api.runs)."""
    from trainkit.api import runs as _runs

    return _runs(path)


def __getattr__(name: str) -> Any:
    """`trainkit.Trainer` and `trainkit.Callback`, imported (with torch) when first used."""
    if name in ("Trainer", "Callback", "TrainingData", "Recipe"):
        from trainkit import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'trainkit' has no attribute {name!r}")
