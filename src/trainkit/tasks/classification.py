"""Classification: cross-entropy loss, accuracy; best checkpoint by validation accuracy."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from trainkit.engine.optimization import Optimization
from trainkit.tasks.base import Batch


class ClassificationTask:
    monitor, monitor_mode = "val/acc", "max"

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"main": list(self.net.parameters())}

    def train_step(self, batch: Batch, opt: Optimization) -> dict[str, Tensor]:
        x, y = batch
        with opt.autocast():
            logits = self.net(x)
            loss = F.cross_entropy(logits, y)
        opt.step("main", loss)
        return {"loss": loss.detach(), "acc": (logits.detach().argmax(1) == y).float().mean()}

    def eval_step(self, batch: Batch) -> dict[str, Tensor]:
        x, y = batch
        logits = self.net(x).float()
        return {"loss": F.cross_entropy(logits, y), "acc": (logits.argmax(1) == y).float().mean()}

    def epoch_images(self) -> dict[str, Tensor]:
        return {}
