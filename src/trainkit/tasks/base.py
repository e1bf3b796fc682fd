"""The seam that keeps the loop and the commands generic: a task owns a model's whole life.

Training: its modules, losses, metrics and update order. After training: its evaluation report, what
`predict` writes for an input, what `export` deploys, what `sample` draws. A new objective is a new file
here (plus its registration in trainkit/registry.py); no command and no loop ever learns what kind of task it runs.
`SingleNetTask` is the plumbing that tasks with one network (classification, regression) share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from trainkit.data.base import DataMeta
from trainkit.errors import ConfigError
from trainkit.reports.base import NoOptions

if TYPE_CHECKING:
    from trainkit.engine.optimization import Optimization
    from trainkit.reports.base import Drawn, EvalInputs, Report

Batch = tuple[Tensor, Tensor]


class CannotDo(ConfigError):
    """A command that this kind of model has no meaning for (predict on a GAN, sample from a classifier)."""


@dataclass
class Predictions:
    """What a task predicts for a batch of raw inputs."""

    columns: dict[str, list[Any]]  # what `trainkit predict` writes for each input, the prediction first
    values: list[Any]  # the prediction per input as plain values: what `trainkit.load(...).predict` returns


class Task(Protocol):
    """The contract of a task; docs/extending.md explains each part with a complete example. A task class is
    constructed as `cls(model, meta, **task.* keys)` (plus `examples=`, a few stored samples, where its signature
    takes it). `io_shapes`, `val_step` and `score` are optional: build, the loop and predict skip what a task does not
    define."""

    monitor: str  # validation metric that picks the best checkpoint, e.g. "val/acc"
    monitor_mode: str  # "max" or "min"
    meta: DataMeta  # the data it was built for: shapes, classes, normalization (stored in every checkpoint)
    report_uses_train: bool  # eval also reads the training split, where it can, for the report's reference figures
    eval_options: type  # a dataclass: the `eval.*` options of its report (trainkit eval), with their defaults

    @staticmethod
    def io_shapes(meta: DataMeta) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """Optional. (one sample's shape in, one sample's output shape out) of the model this task trains on `meta`:
        before anything is allocated, build runs a batch of that shape through the model on the meta device and
        refuses a model whose output is not that shape. None: no check."""

    # --- training (the loop) -------------------------------------------------------------------------------
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

    def val_step(self, batch: Batch) -> dict[str, Tensor]:
        """Optional. Each epoch's validation during training, where it should cost less than the evaluation after
        it (classification with test-time flips measures the network alone); the same metrics as eval_step. Without
        it, each epoch's validation calls eval_step."""

    def epoch_images(self) -> dict[str, Tensor]:
        """Images to keep after each epoch (name → C×H×W in [0, 1]); most tasks return {}."""

    # --- after training (eval, predict, export, sample); modules are in eval mode --------------------------
    def report(self, inputs: EvalInputs, options: Any) -> Report:
        """`trainkit eval`: the numbers, details, tables and pictures that judge the model on one split; `options` is
        an `eval_options` built from the command's `eval.*` keys."""

    def predict(self, x: Tensor) -> Predictions:
        """`trainkit predict` and `trainkit.load(...).predict`: a batch of raw inputs (as stored on disk) → output
        columns of plain values, e.g. {"label": ["cat", ...], "confidence": [0.93, ...]}, one value per input,
        and the prediction per input. Raises CannotDo for a task that takes no input."""

    def score(self, values: list[Any], targets: Tensor) -> dict[str, float]:
        """Optional. How well predictions (`Predictions.values`) match stored targets: `trainkit predict` prints it
        for inputs that carry labels, e.g. {"accuracy": 0.97}."""

    def deployable(self) -> nn.Module:
        """`trainkit export` and `trainkit.load`: the module a user runs, raw inputs in (the normalization
        inside), in eval mode, on the task's device."""

    def example_input(self, n: int, seed: int = 0) -> Tensor:
        """A batch of `n` inputs of what `deployable()` takes, for tracing and for checking an export."""

    def describe(self, uint8_input: bool = False) -> dict[str, Any]:
        """What goes in and out of `deployable()`: {"task", "input", "output", ...}, stored in exported files."""

    def sample(self, n: int, seed: int, nrow: int | None = None) -> Drawn:
        """`trainkit sample`: `n` new samples as a picture (and a table where samples are numbers). Raises
        CannotDo, in one line, for a task that does not generate."""


class SingleNetTask:
    """One network, one optimizer ("main"), one loss: the plumbing classification and regression share.
    A subclass gives `monitor`, `train_step`, `eval_step`, `report`, `predict` and `describe`."""

    monitor: str
    monitor_mode: str
    report_uses_train = False
    eval_options: type = NoOptions

    def __init__(self, net: nn.Module, meta: DataMeta) -> None:
        self.net = self.train_net = net  # train_net: the same net, or its DDP wrapper when data-parallel
        self.meta = meta

    @staticmethod
    def io_shapes(meta: DataMeta) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """One sample in, one sample's outputs out: what build checks the network against before training."""
        return tuple(meta.in_shape), (meta.num_outputs,)

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        self.train_net = wrap(self.net)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"main": list(self.net.parameters())}

    def epoch_images(self) -> dict[str, Tensor]:
        return {}

    def outputs(self, x: Tensor) -> Tensor:
        """The network's float32 outputs (logits, predictions) for a normalized batch."""
        return self.net(x).float()

    def deployable(self) -> nn.Module:
        from trainkit.reports.inference import RawInput

        return nn.Sequential(RawInput(self.meta), self.net).to(_device(self.net)).eval()

    def example_input(self, n: int, seed: int = 0) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        if self.meta.scale != 1.0:  # stored pixels: whole numbers 0..scale
            return torch.randint(0, int(self.meta.scale) + 1, (n, *self.meta.in_shape), generator=g).float()
        return torch.randn(n, *self.meta.in_shape, generator=g)

    def _input(self, uint8_input: bool) -> dict[str, Any]:
        meta = self.meta
        values = "pixel values 0..255" if meta.scale == 255.0 else "raw x values"
        return {"name": "x", "shape": ["batch", *meta.in_shape], "dtype": "float32" + (" or uint8" * uint8_input),
                "values": f"{values}; the normalization is inside the model"}

    def _normalization(self) -> dict[str, Any]:
        return {"scale": self.meta.scale, "mean": self.meta.mean, "std": self.meta.std}

    @torch.inference_mode()
    def _raw_outputs(self, x: Tensor) -> Tensor:
        model = self.deployable()
        return model(x.to(_device(self.net))).float().cpu()

    def sample(self, n: int, seed: int, nrow: int | None = None) -> Drawn:
        raise CannotDo(f"this is a {type(self).__name__.removesuffix('Task').lower()} model, not a GAN: it draws "
                       f"no new samples. Judge it with `trainkit eval`, or run it on inputs with `trainkit predict`.")


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
