"""Regression: mean squared error loss, mean absolute error; best checkpoint by validation loss."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from trainkit.engine.optimization import Optimization
from trainkit.tasks.base import Batch


class RegressionTask:
    monitor, monitor_mode = "val/loss", "min"

    def __init__(self, net: nn.Module) -> None:
        self.net = self.train_net = net  # train_net: the same net, or its DDP wrapper when data-parallel

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        self.train_net = wrap(self.net)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"main": list(self.net.parameters())}

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

    def epoch_images(self) -> dict[str, Tensor]:
        return {}

    def predict(self, x: Tensor) -> Tensor:
        """Predicted targets (float32) of a batch; used after training, not by the loop."""
        return self.net(x).float()
