"""Regression: mean squared error loss, mean absolute error; best checkpoint by validation loss."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from trainkit.engine.optimization import Optimization
from trainkit.tasks.base import Batch


class RegressionTask:
    monitor, monitor_mode = "val/loss", "min"

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"main": list(self.net.parameters())}

    def train_step(self, batch: Batch, opt: Optimization) -> dict[str, Tensor]:
        x, y = batch
        with opt.autocast():
            pred = self.net(x)
        loss = F.mse_loss(pred.float(), y)  # the loss in float32 even under autocast
        opt.step("main", loss)
        return {"loss": loss.detach(), "mae": (pred.detach().float() - y).abs().mean()}

    def eval_step(self, batch: Batch) -> dict[str, Tensor]:
        x, y = batch
        pred = self.net(x).float()
        return {"loss": F.mse_loss(pred, y), "mae": (pred - y).abs().mean()}

    def epoch_images(self) -> dict[str, Tensor]:
        return {}
