"""The GAN report: a grid of new samples, and how far they are from the real ones.

Images: the Fréchet distance in the feature space of a classifier trained on the same data (no download;
the FID formula with trainkit's own network in Inception's place) and the classes that classifier sees in
the generated images. Points (regression data): the energy distance on the raw (x, y) values. Each
distance comes with its floor: the same distance between real training samples and the real split.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from trainkit.reports.base import EvalInputs, Report, class_names, pixels01
from trainkit.reports.inference import RawInput, batches
from trainkit.reports.measures import energy_distance, frechet_distance, subsample
from trainkit.reports.render import GREEN, RED, Series, bar_chart, image_grid, scatter_plot

MAX_POINTS = 2000  # the energy distance is quadratic in memory
SAMPLE_SEED = 0  # the same checkpoint always shows the same samples


def as_generated(x: Tensor, y: Tensor | None, inputs: EvalInputs) -> Tensor:
    """Stored samples in the units the generator produces: pixels in [0, 1], or (x, y) rows."""
    if inputs.task.joint:
        return torch.cat([x.float().flatten(1), y.float().flatten(1)], 1)
    return pixels01(x, inputs.meta)


def report(inputs: EvalInputs, train_x: Tensor, train_y: Tensor, samples: int = 64,
           classifier: Any = None) -> Report:
    """`train_x`, `train_y`: the training split as stored, for the floor of each distance."""
    real = as_generated(inputs.raw, inputs.targets, inputs)
    keep = subsample(torch.arange(len(train_x)), len(real), SAMPLE_SEED)  # as many as the split has
    train = as_generated(train_x[keep], train_y[keep], inputs)
    fake = inputs.task.generate(len(real), seed=SAMPLE_SEED)
    if inputs.task.joint:
        return _points_report(inputs, real, fake, train)
    rep = Report()
    grid = fake[:samples] if len(fake) >= samples else inputs.task.generate(samples, seed=SAMPLE_SEED)
    rep.images["samples"] = image_grid(grid, nrow=max(1, round(math.sqrt(len(grid)))))
    rep.details["samples_shown"] = len(grid)
    if classifier is None:
        rep.notes.append("for a Fréchet distance and the classes of the generated images, give a classifier "
                         "trained on the same data: eval.feature_ckpt=PATH")
        return rep
    _feature_measures(inputs, rep, real, fake, train, classifier)
    return rep


@torch.inference_mode()
def _features(classifier: Any, images01: Tensor, inputs: EvalInputs) -> tuple[Tensor, Tensor]:
    """(penultimate features, class probabilities) of images in [0, 1], as the classifier saw them in training."""
    device = next(classifier.net.parameters()).device
    normalize = RawInput(inputs.meta).to(device)
    feats, probs = [], []
    for batch in batches(images01, 1024):
        x = normalize(batch.to(device) * inputs.meta.scale)
        with inputs.autocast():
            feats.append(classifier.features(x).float().cpu())
            probs.append(torch.softmax(classifier.predict(x).float(), 1).cpu())
    return torch.cat(feats), torch.cat(probs)


def _feature_measures(inputs: EvalInputs, rep: Report, real: Tensor, fake: Tensor, train: Tensor,
                      classifier: Any) -> None:
    names = class_names(inputs.meta)
    real_f, _ = _features(classifier, real, inputs)
    fake_f, fake_p = _features(classifier, fake, inputs)
    train_f, _ = _features(classifier, train, inputs)
    s = inputs.split
    rep.scalars[f"{s}/fd"] = frechet_distance(real_f, fake_f)
    rep.scalars[f"{s}/fd_train"] = frechet_distance(real_f, train_f)
    confidence, predicted = fake_p.max(1)
    rep.scalars[f"{s}/gen_confidence"] = confidence.mean().item()
    counts = torch.bincount(predicted, minlength=len(names)).tolist()
    rep.details.update({
        "fd": rep.scalars[f"{s}/fd"],
        "fd_train": rep.scalars[f"{s}/fd_train"],  # real training images against the same split: the floor
        "feature_dim": real_f.shape[1],
        "generated": len(fake),
        "generated_class_histogram": dict(zip(names, counts)),
        "generated_mean_confidence": rep.scalars[f"{s}/gen_confidence"],
    })
    rep.images["generated_classes"] = bar_chart(
        counts, names, f"classes the classifier sees in {len(fake)} generated images "
                       f"(mean confidence {confidence.mean().item():.0%})")


def _points_report(inputs: EvalInputs, real: Tensor, fake: Tensor, train: Tensor) -> Report:
    s = inputs.split
    r, f = subsample(real, MAX_POINTS, 1), subsample(fake, MAX_POINTS, 2)
    energy = energy_distance(r, f)
    floor = energy_distance(r, subsample(train, MAX_POINTS, 3))
    title = f"{inputs.meta.name} {s}: energy distance {energy:.4g} (real train vs {s}: {floor:.4g})"
    picture = scatter_plot([Series(r, GREEN, f"real ({s})"), Series(f, RED, "generated")], title, "x", "y")
    details = {"energy_distance": energy, "energy_distance_train": floor, "points": len(r)}
    return Report({f"{s}/energy": energy, f"{s}/energy_train": floor}, details, {"points": picture})
