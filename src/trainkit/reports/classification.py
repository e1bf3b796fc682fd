"""The classification report: overall and per-class accuracy, the confusion matrix, and the test images
the model got wrong with the most confidence (a picture of them where samples are images)."""

from __future__ import annotations

import torch

from trainkit.reports.base import EvalInputs, Report, ReportTable, class_names, pixels01
from trainkit.reports.inference import collect
from trainkit.reports.measures import confusion_matrix, per_class_accuracy
from trainkit.reports.render import confusion_image, image_grid


def report(inputs: EvalInputs, misclassified: int = 32) -> Report:
    logits, targets = collect(inputs.task.outputs, inputs.loader, inputs.autocast, inputs.limit)
    names = class_names(inputs.meta)
    confidence, predicted = torch.softmax(logits, 1).max(1)
    matrix = confusion_matrix(targets, predicted, len(names))
    n = len(targets)
    accuracy = matrix.trace().item() / max(n, 1)
    per_class = [
        {"class": name, "samples": int(matrix[i].sum()), "accuracy": acc,
         "most_confused_with": _most_confused(matrix, i, names)}
        for i, (name, acc) in enumerate(zip(names, per_class_accuracy(matrix)))
    ]
    wrong = (predicted != targets).nonzero().flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)][:misclassified]
    shown = [{"index": int(i), "true": names[int(targets[i])], "predicted": names[int(predicted[i])],
              "confidence": confidence[i].item()} for i in worst]
    title = f"{inputs.meta.name} {inputs.split}: accuracy {accuracy:.2%} on {n} samples"
    images = {"confusion_matrix": confusion_image(matrix, names, title)}
    if shown and inputs.raw.dim() == 4:  # pictures of the mistakes, where samples are images (vectors: the table)
        captions = [f"true {m['true']}\nsaid {m['predicted']} ({m['confidence']:.0%})" for m in shown]
        images["misclassified"] = image_grid(pixels01(inputs.raw[worst], inputs.meta), captions, nrow=8)
    details = {
        "accuracy": accuracy,
        "errors": len(wrong),
        "class_names": names,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),  # rows: true class, columns: predicted class
        "misclassified": shown,  # the most confident mistakes first
    }
    rows = [[row["class"], str(row["samples"]), "" if row["accuracy"] is None else f"{row['accuracy']:.2%}",
             row["most_confused_with"] or ""] for row in per_class]
    table = ReportTable(f"{inputs.split} accuracy per class", ["class", "samples", "accuracy", "most often taken for"],
                        rows, right=["samples", "accuracy", "most often taken for"])
    return Report({}, details, images, tables=[table])


def _most_confused(matrix: torch.Tensor, i: int, names: list[str]) -> str | None:
    row = matrix[i].clone()
    row[i] = 0
    return names[int(row.argmax())] if row.sum() > 0 else None
