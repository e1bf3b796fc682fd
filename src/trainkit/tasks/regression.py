"""Regression: mean squared error loss, mean absolute error; best checkpoint by validation loss. After training:
the R² report with its plots, one prediction column per target, raw x values in and predictions out."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from trainkit.data.base import DataMeta
from trainkit.engine.optimization import Optimization
from trainkit.errors import ConfigError
from trainkit.reports.base import EvalInputs, NoOptions, Report
from trainkit.tasks.base import Batch, Predictions, SingleNetTask


class RegressionTask(SingleNetTask):
    monitor, monitor_mode = "val/loss", "min"

    def __init__(self, net: torch.nn.Module, meta: DataMeta) -> None:
        super().__init__(net, meta)
        if tuple(meta.target_shape) != (meta.num_outputs,):
            what = "class labels" if tuple(meta.target_shape) == () else f"targets of shape {list(meta.target_shape)}"
            raise ConfigError(f"task=regression learns {meta.num_outputs} number(s) per sample, and data={meta.name} "
                              f"has {what} ({meta.kind} data): choose task=auto (the task for the data's kind) or the "
                              f"task that learns such targets (e.g. task=classification).")

    def train_step(self, batch: Batch, opt: Optimization) -> dict[str, Tensor]:
        x, y = batch
        with opt.autocast():
            pred = self.train_net(x)
        loss = F.mse_loss(pred.float(), y)  # the loss in float32 even under autocast
        opt.step("main", loss)
        return {"loss": loss.detach(), "mae": (pred.detach().float() - y).abs().mean()}

    def eval_step(self, batch: Batch) -> dict[str, Tensor]:
        x, y = batch
        pred = self.net(x).float()
        return {"loss": F.mse_loss(pred, y), "mae": (pred - y).abs().mean()}

    def report(self, inputs: EvalInputs, options: NoOptions) -> Report:
        from trainkit.reports import regression

        return regression.report(inputs)

    def _columns(self) -> list[str]:
        k = self.meta.num_outputs
        return ["prediction"] if k == 1 else [f"prediction_{i}" for i in range(k)]

    def predict(self, x: Tensor) -> Predictions:
        out = self._raw_outputs(x).reshape(len(x), self.meta.num_outputs)
        values = out[:, 0].tolist() if self.meta.num_outputs == 1 else out.tolist()
        return Predictions({name: out[:, i].tolist() for i, name in enumerate(self._columns())}, values)

    def score(self, values: list[Any], targets: Tensor) -> dict[str, float]:
        """The mean absolute error of the predictions against the stored targets."""
        predicted = torch.tensor(values, dtype=torch.float32).reshape(len(values), -1)
        return {"mae": (predicted - targets.float().reshape(len(values), -1)).abs().mean().item()}

    def describe(self, uint8_input: bool = False) -> dict[str, Any]:
        return {"task": "regression", "input": self._input(uint8_input), "normalization": self._normalization(),
                "output": {"shape": ["batch", self.meta.num_outputs], "values": "predicted targets"}}
