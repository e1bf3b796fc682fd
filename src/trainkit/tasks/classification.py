"""Classification: cross-entropy loss, accuracy; best checkpoint by validation accuracy. After training: the
per-class report, class names with their confidence for new inputs, logits out of the exported model."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainkit.engine.optimization import Optimization
from trainkit.reports.base import EvalInputs, EvalOptions, Report, class_names
from trainkit.tasks.base import Batch, SingleNetTask


class ClassificationTask(SingleNetTask):
    monitor, monitor_mode = "val/acc", "max"

    def train_step(self, batch: Batch, opt: Optimization) -> dict[str, Tensor]:
        x, y = batch
        with opt.autocast():
            logits = self.train_net(x)
            loss = F.cross_entropy(logits, y)
        opt.step("main", loss)
        # Per sample: the accumulator reduces the queued values once per flush, which saves two small ops a step.
        return {"loss": loss.detach(), "acc": logits.detach().argmax(1) == y}

    def eval_step(self, batch: Batch) -> dict[str, Tensor]:
        x, y = batch
        logits = self.net(x).float()
        return {"loss": F.cross_entropy(logits, y), "acc": logits.argmax(1) == y}

    def report(self, inputs: EvalInputs, options: EvalOptions) -> Report:
        from trainkit.reports import classification

        return classification.report(inputs, options.misclassified)

    def predict(self, x: Tensor) -> dict[str, list[Any]]:
        confidence, label = torch.softmax(self._raw_outputs(x), 1).max(1)
        names = class_names(self.meta)
        return {"label": [names[k] for k in label.tolist()], "confidence": [round(c, 4) for c in confidence.tolist()]}

    def describe(self, uint8_input: bool = False) -> dict[str, Any]:
        return {"task": "classification", "input": self._input(uint8_input), "normalization": self._normalization(),
                "class_names": class_names(self.meta),
                "output": {"shape": ["batch", self.meta.num_outputs],
                           "values": "class logits (softmax gives probabilities)"}}

    def features(self, x: Tensor) -> Tensor:
        """The penultimate activations (what the last linear layer reads) of a normalized batch: N×F, a learned
        feature space (a GAN's report measures its Fréchet distance in it)."""
        last = [m for m in self.net.modules() if isinstance(m, nn.Linear)][-1]
        seen: list[Tensor] = []
        handle = last.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
        try:
            self.net(x)
        finally:
            handle.remove()
        return seen[0].float().flatten(1)
