"""trainkit from Python (notebooks, scripts): `train` runs exactly what `trainkit train` runs; `load` gives a
trained model back from its checkpoint alone, ready for raw inputs as they are stored on disk.

    import trainkit
    summary = trainkit.train(["model=cnn", "data=mnist_csv", "data.train_csv=train.csv"])
    model = trainkit.load(summary["checkpoints"]["best"])
    model.predict(pixels)  # class names
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from trainkit.errors import UserError


def train(overrides: Iterable[str] = (), callbacks: Iterable[Any] = ()) -> dict[str, Any]:
    """`trainkit train OVERRIDES` in this process: the same configs, run directory, logs and checkpoints. Returns
    the run's summary (summary.json: run_dir, best and test metrics, checkpoint paths); raises trainkit's error
    (a UserError with the one-paragraph message) where the command would exit 1. `callbacks`:
    trainkit.trainer.Callback objects attached to the run's Trainer."""
    from trainkit.cli import run
    from trainkit.trainer import ATTACHED

    token = ATTACHED.set(tuple(callbacks))
    try:
        return run("train", [str(o) for o in overrides])
    finally:
        ATTACHED.reset(token)


class Model:
    """A trained model restored from a checkpoint: call it on raw inputs (uint8 or float pixels, N×C×H×W or one
    row of pixels per sample; a regression's x values) for its outputs (class logits, predictions; a GAN's
    generator takes latent noise); `.predict` for what `trainkit predict` writes (class names for a
    classifier); `.meta` is the data's description (shapes, class names, normalization)."""

    def __init__(self, restored: Any) -> None:
        self.task = restored.task
        self.meta = restored.meta
        self.module = restored.task.deployable()
        self.device = restored.device
        self.checkpoint = restored.path
        self.input_shape = tuple(self.task.example_input(1).shape[1:])  # one sample of what `module` takes

    def _shaped(self, x: Any) -> Tensor:
        x = torch.as_tensor(x)
        shape = self.input_shape
        if tuple(x.shape[1:]) == shape:
            return x
        if tuple(x.shape) == shape:  # one sample
            return x.unsqueeze(0)
        if x.dim() == 2 and x.shape[1] == math.prod(shape):  # one flattened sample per row (pixel-row CSVs)
            return x.reshape(len(x), *shape)
        if x.dim() == 1 and shape == (1,):  # a column of x values
            return x.unsqueeze(1)
        raise UserError(f"trainkit.load({self.checkpoint}): inputs of shape {list(x.shape)} do not fit this model, "
                        f"which takes samples of shape {list(shape)} (a batch: N×{'×'.join(map(str, shape))}, or "
                        f"N×{math.prod(shape)} flattened).")

    @torch.inference_mode()
    def __call__(self, x: Any) -> Tensor:
        """Outputs for a batch of raw inputs, float32 on the CPU (a GAN: samples for a batch of latent noise)."""
        return self.module(self._shaped(x).to(self.device)).float().cpu()

    @torch.inference_mode()
    def predict(self, x: Any) -> list[Any]:
        """The prediction per input, as `trainkit predict` writes it: a classifier's class names, a regression's
        values (a list per sample where there are several targets)."""
        columns = list(self.task.predict(self._shaped(x)).values())
        if len(columns) > 1 and all(isinstance(v, float) for column in columns for v in column):
            return [list(row) for row in zip(*columns)]  # several numeric outputs per sample
        return columns[0]

    def sample(self, n: int, seed: int = 0) -> Any:
        """`n` new samples, for a model that generates (trainkit sample): a PIL image and, for points, a table."""
        return self.task.sample(n, seed)


def load(checkpoint: str | Path, device: str | None = None, plugins: Iterable[str] = ()) -> Model:
    """The model in `checkpoint` (a .ckpt trainkit wrote), without its training data. `device`: cpu, cuda, ...;
    default: the checkpoint's own trainer.device (auto: a GPU where there is one). `plugins`: modules to import
    first, which register the run's own model or task (importing them yourself does the same)."""
    from omegaconf import OmegaConf

    from trainkit import registry
    from trainkit.restore import restore

    registry.load_plugins(list(plugins))

    overrides = OmegaConf.create({"trainer": {"device": device}}) if device else None
    return Model(restore(checkpoint, overrides))
