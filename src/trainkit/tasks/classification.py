"""Classification: cross-entropy loss, accuracy; best checkpoint by validation accuracy. After training: the
per-class report, class names with their confidence for new inputs, logits out of the exported model.

Two recipe options (benchmarks/README.md measures each): `label_smoothing` softens the training targets (the
validation and test losses stay the plain cross-entropy, comparable across runs), and `tta_flip` averages the
logits of each image and its mirror image wherever the trained network is used (the test pass after training, eval,
predict, export; each epoch's validation measures the network alone): CIFAR-like photographs, not digits or text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainkit.data.base import DataMeta
from trainkit.engine.optimization import Optimization
from trainkit.errors import ConfigError
from trainkit.reports.base import EvalInputs, Report, class_names
from trainkit.tasks.base import Batch, Predictions, SingleNetTask


@dataclass
class ClassificationEvalOptions:
    """`trainkit eval`'s options for a classifier."""

    misclassified: int = 32  # the most confidently misclassified images shown in misclassified.png (0: none)

    def __post_init__(self) -> None:
        if self.misclassified < 0:
            raise ConfigError(f"eval.misclassified={self.misclassified} must be 0 or more: how many of the most "
                              f"confidently misclassified images misclassified.png shows.")


class FlipAverage(nn.Module):
    """A classifier's logits averaged over each image and its horizontal mirror (test-time augmentation). Both
    views go through the network as one batch of 2N: one call, and batch norm in eval mode treats them alike."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        logits = self.net(torch.cat([x, x.flip(3)]))
        return (logits[:len(x)] + logits[len(x):]) / 2


class ClassificationTask(SingleNetTask):
    monitor, monitor_mode = "val/acc", "max"
    eval_options = ClassificationEvalOptions

    def __init__(self, net: nn.Module, meta: DataMeta, label_smoothing: float = 0.0, tta_flip: bool = False) -> None:
        super().__init__(net, meta)
        if tuple(meta.target_shape) != ():
            raise ConfigError(f"task=classification learns one class index per sample, and data={meta.name} has targets "
                              f"of shape {list(meta.target_shape)} ({meta.kind} data): choose task=auto (the task for "
                              f"the data's kind) or the task that learns such targets (e.g. task=regression).")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"task.label_smoothing={label_smoothing} must be in [0, 1): the share of each training "
                              f"target spread over all classes (e.g. 0.1; 0: plain cross-entropy).")
        if tta_flip and len(meta.in_shape) != 3:
            raise ConfigError(f"task.tta_flip=true mirrors images left to right, and data={meta.name} has samples of "
                              f"shape {list(meta.in_shape)}, not C×H×W images: set task.tta_flip=false.")
        self.label_smoothing, self.tta_flip = float(label_smoothing), bool(tta_flip)
        # What evaluation runs: the network, or the network averaged over the mirror images. Not in modules():
        # checkpoints hold the same weights either way.
        self.eval_net: nn.Module = FlipAverage(net) if tta_flip else net

    def train_step(self, batch: Batch, opt: Optimization) -> dict[str, Tensor]:
        x, y = batch
        with opt.autocast():
            logits = self.train_net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        opt.step("main", loss)
        # Per sample: the accumulator reduces the queued values once per flush, which saves two small ops a step.
        return {"loss": loss.detach(), "acc": logits.detach().argmax(1) == y}

    def eval_step(self, batch: Batch) -> dict[str, Tensor]:
        return self._measured(self.eval_net, batch)

    def val_step(self, batch: Batch) -> dict[str, Tensor]:
        """Each epoch's validation measures the network as trained, without the mirror images: it follows progress
        and picks the best epoch at the cost of one forward pass per image, where the flips cost more than two
        (benchmarks/README.md). The test pass, eval, predict and export use them."""
        return self._measured(self.net, batch)

    @staticmethod
    def _measured(net: nn.Module, batch: Batch) -> dict[str, Tensor]:
        x, y = batch
        logits = net(x).float()
        return {"loss": F.cross_entropy(logits, y), "acc": logits.argmax(1) == y}

    def outputs(self, x: Tensor) -> Tensor:
        return self.eval_net(x).float()

    def deployable(self) -> nn.Module:
        from trainkit.reports.inference import RawInput

        if not self.tta_flip:
            return super().deployable()
        return nn.Sequential(RawInput(self.meta), self.eval_net).to(next(self.net.parameters()).device).eval()

    def report(self, inputs: EvalInputs, options: ClassificationEvalOptions) -> Report:
        from trainkit.reports import classification

        return classification.report(inputs, options.misclassified)

    def predict(self, x: Tensor) -> Predictions:
        confidence, label = torch.softmax(self._raw_outputs(x), 1).max(1)
        names = class_names(self.meta)
        labels = [names[k] for k in label.tolist()]
        return Predictions({"label": labels, "confidence": [round(c, 4) for c in confidence.tolist()]}, labels)

    def score(self, values: list[Any], targets: Tensor) -> dict[str, float]:
        """The share of inputs whose predicted class name is their label's."""
        names = class_names(self.meta)
        expected = [names[k] for k in targets.tolist()]
        return {"accuracy": sum(p == e for p, e in zip(values, expected)) / max(len(expected), 1)}

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
