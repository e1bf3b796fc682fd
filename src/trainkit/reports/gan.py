"""The GAN report: a grid of new samples, and how far they are from the real ones.

Images: the Fréchet distance in the feature space of a classifier trained on the same data (no download;
the FID formula with trainkit's own network in Inception's place) and the classes that classifier sees in
the generated images. Points (regression data): the energy distance on the raw (x, y) values. Each
distance comes with its floor: the same distance between real training samples and the real split.
"""

from __future__ import annotations

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


def report(inputs: EvalInputs, samples: int = 64, classifier: Any = None) -> Report:
    """`inputs.train`, the training split as stored, gives the floor of each distance; without it (its files
    are gone) the floors are left out and a note says so."""
    real = as_generated(inputs.raw, inputs.targets, inputs)
    train = None
    if inputs.train is not None:
        keep = subsample(torch.arange(len(inputs.train)), len(real), SAMPLE_SEED)  # as many as the split has
        train = as_generated(inputs.train.x[keep], inputs.train.y[keep], inputs)
    fake = inputs.task.generate(len(real), seed=SAMPLE_SEED)
    rep = _points_report(inputs, real, fake, train) if inputs.task.joint else Report()
    if train is None:
        rep.notes.append("the training data could not be read, so the real-vs-real floor of each distance is "
                         "left out (give the training files' paths to get it)")
    if inputs.task.joint:
        return rep
    grid = fake[:samples] if len(fake) >= samples else inputs.task.generate(samples, seed=SAMPLE_SEED)
    rep.images["samples"] = image_grid(grid, nrow=inputs.task.grid_columns(len(grid)))
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
    device = next(p for m in classifier.modules().values() for p in m.parameters()).device
    normalize = RawInput(inputs.meta).to(device)
    feats, probs = [], []
    for batch in batches(images01, 1024):
        x = normalize(batch.to(device) * inputs.meta.scale)
        with inputs.autocast():
            feats.append(classifier.features(x).float().cpu())
            probs.append(torch.softmax(classifier.outputs(x), 1).cpu())
    return torch.cat(feats), torch.cat(probs)


def _feature_measures(inputs: EvalInputs, rep: Report, real: Tensor, fake: Tensor, train: Tensor | None,
                      classifier: Any) -> None:
    names = class_names(inputs.meta)
    real_f, _ = _features(classifier, real, inputs)
    fake_f, fake_p = _features(classifier, fake, inputs)
    s = inputs.split
    rep.scalars[f"{s}/fd"] = frechet_distance(real_f, fake_f)
    if train is not None:  # real training images against the same split: the floor
        rep.scalars[f"{s}/fd_train"] = frechet_distance(real_f, _features(classifier, train, inputs)[0])
    confidence, predicted = fake_p.max(1)
    rep.scalars[f"{s}/gen_confidence"] = confidence.mean().item()
    counts = torch.bincount(predicted, minlength=len(names)).tolist()
    rep.details.update({
        "fd": rep.scalars[f"{s}/fd"],
        "fd_train": rep.scalars.get(f"{s}/fd_train"),
        "feature_dim": real_f.shape[1],
        "generated": len(fake),
        "generated_class_histogram": dict(zip(names, counts)),
        "generated_mean_confidence": rep.scalars[f"{s}/gen_confidence"],
    })
    rep.images["generated_classes"] = bar_chart(
        counts, names, f"classes the classifier sees in {len(fake)} generated images "
                       f"(mean confidence {confidence.mean().item():.0%})")


def _points_report(inputs: EvalInputs, real: Tensor, fake: Tensor, train: Tensor | None) -> Report:
    s = inputs.split
    r, f = subsample(real, MAX_POINTS, 1), subsample(fake, MAX_POINTS, 2)
    energy = energy_distance(r, f)
    scalars, details = {f"{s}/energy": energy}, {"energy_distance": energy, "points": len(r)}
    title = f"{inputs.meta.name} {s}: energy distance {energy:.4g}"
    if train is not None:
        floor = energy_distance(r, subsample(train, MAX_POINTS, 3))
        scalars[f"{s}/energy_train"] = details["energy_distance_train"] = floor
        title += f" (real train vs {s}: {floor:.4g})"
    picture = scatter_plot([Series(r, GREEN, f"real ({s})"), Series(f, RED, "generated")], title, "x", "y")
    return Report(scalars, details, {"points": picture})
