"""Classification: cross-entropy loss, accuracy; best checkpoint by validation accuracy."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from trainkit.engine.optimization import Optimization
from trainkit.tasks.base import Batch


class ClassificationTask:
    monitor, monitor_mode = "val/acc", "max"

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
            logits = self.train_net(x)
            loss = F.cross_entropy(logits, y)
        opt.step("main", loss)
        # Per sample: a batch mean took two more small ops every step (the whole accuracy: 1-1.4% of an MNIST MLP
        # step on the CPU); the accumulator reduces the queued values once per flush instead.
        return {"loss": loss.detach(), "acc": logits.detach().argmax(1) == y}

    def eval_step(self, batch: Batch) -> dict[str, Tensor]:
        x, y = batch
        logits = self.net(x).float()
        return {"loss": F.cross_entropy(logits, y), "acc": logits.argmax(1) == y}

    def epoch_images(self) -> dict[str, Tensor]:
        return {}

    # After training (eval reports, predict, the Fréchet distance of a GAN): not used by the loop.
    def predict(self, x: Tensor) -> Tensor:
        """Class logits (float32) of a normalized batch."""
        return self.net(x).float()

    def features(self, x: Tensor) -> Tensor:
        """The penultimate activations (what the last linear layer reads): N×F, a learned feature space."""
        last = [m for m in self.net.modules() if isinstance(m, nn.Linear)][-1]
        seen: list[Tensor] = []
        handle = last.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
        try:
            self.net(x)
        finally:
            handle.remove()
        return seen[0].float().flatten(1)
