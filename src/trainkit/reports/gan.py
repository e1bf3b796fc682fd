"""The GAN report: a grid of new samples, and how far they are from the real ones.

Images: the Fréchet distance in the feature space of a classifier trained on the same data (no download;
the FID formula with trainkit's own network in Inception's place) and the classes that classifier sees in
the generated images. Points (regression data): the energy distance on the raw (x, y) values. Each
distance comes with its floor: the same distance between real training samples and the real split.
Curves (the seeds' painter): the energy distance on the paintings, and how well they keep to their family: the share
between the family's bounds at every point, the Kolmogorov–Smirnov statistic of their fitted a against the uniform
range of a, their residual from the family, and the discriminator's accuracy and score; the picture draws generated
paintings over the bounds, the discriminator's figures written on it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from trainkit.reports.base import EvalInputs, Report, ReportTable, class_names, pixels01
from trainkit.reports.inference import RawInput, batches
from trainkit.reports.measures import energy_distance, frechet_distance, ks_uniform, subsample
from trainkit.reports.render import (GREEN, ORANGE, RED, SKY, Lines, Series, bar_chart, histogram, image_grid,
                                     line_plot, scatter_plot)

MAX_POINTS = 2000  # the energy distance is quadratic in memory
SAMPLE_SEED = 0  # the same checkpoint always shows the same samples


def as_generated(x: Tensor, y: Tensor | None, inputs: EvalInputs) -> Tensor:
    """Stored samples in the units the generator produces: pixels in [0, 1], (x, y) rows, or curves as stored."""
    if inputs.task.joint:
        return torch.cat([x.float().flatten(1), y.float().flatten(1)], 1)
    if inputs.task.curves is not None:
        return x.float()
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
    vectors = inputs.task.joint or inputs.task.curves is not None
    if inputs.task.curves is not None:
        rep = _curves_report(inputs, real, fake, train, samples)
    else:
        rep = _points_report(inputs, real, fake, train) if inputs.task.joint else Report()
    if train is None:
        rep.notes.append("the training data could not be read, so the real-vs-real floor of each distance is "
                         "left out (give the training files' paths to get it)")
    if vectors:
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


def _energy(inputs: EvalInputs, real: Tensor, fake: Tensor, train: Tensor | None) -> tuple[Report, str]:
    """The energy distance between (subsamples of) real and generated samples, and its real-vs-real floor; and a
    title that says both."""
    s = inputs.split
    r, f = subsample(real, MAX_POINTS, 1), subsample(fake, MAX_POINTS, 2)
    energy = energy_distance(r, f)
    scalars, details = {f"{s}/energy": energy}, {"energy_distance": energy, "points": len(r)}
    title = f"{inputs.meta.name} {s}: energy distance {energy:.4g}"
    if train is not None:
        floor = energy_distance(r, subsample(train, MAX_POINTS, 3))
        scalars[f"{s}/energy_train"] = details["energy_distance_train"] = floor
        title += f" (real train vs {s}: {floor:.4g})"
    return Report(scalars, details), title


def _points_report(inputs: EvalInputs, real: Tensor, fake: Tensor, train: Tensor | None) -> Report:
    rep, title = _energy(inputs, real, fake, train)
    r, f = subsample(real, MAX_POINTS, 1), subsample(fake, MAX_POINTS, 2)
    rep.images["points"] = scatter_plot([Series(r, GREEN, f"real ({inputs.split})"), Series(f, RED, "generated")],
                                        title, "x", "y")
    return rep


# --- curves: the seeds' painter -----------------------------------------------------------------------------------

def curve_measures(curves: Any, paintings: Tensor) -> dict[str, Any]:
    """How well `paintings` (N×points) keep to the family of `curves` (trainkit.data.curves.Curves): the share that
    lies between the bounds at every point, the one-sample KS statistic of their least-squares a against the uniform
    [a_low, a_high], the mean of their residuals from the family (root mean square over the points), and their
    fitted a (a tensor, for the histogram)."""
    a, residual = curves.fit(paintings)
    return {"between": curves.between(paintings).double().mean().item(),
            "ks_a": ks_uniform(a, curves.a_low, curves.a_high),
            "residual": residual.mean().item(), "a_mean": a.mean().item(), "a": a}


def paintings_picture(task: Any, fake: Tensor, shown: int = 8, title: str | None = None, real: Tensor | None = None,
                      size: tuple[int, int] = (600, 480)) -> Any:
    """The seeds' painter's picture: the first `shown` generated paintings (the first one bold) over the family's upper
    and lower bounds, with the discriminator's accuracy on real paintings and its score written on it (against
    `real`, by default the real paintings the task carries), and the share of `fake` between the bounds."""
    curves = task.curves
    lower, upper = curves.bounds()
    real = task.reference if real is None else real
    notes = []
    if real is not None and len(real) and len(fake):
        acc, score = task.discriminator_figures(real, fake)
        notes += [f"D accuracy on real paintings {acc:.2f} (0.5 when D has converged)",
                  f"D score {score:.3f} (-log 4 = -1.386 when G has converged)"]
    between = curves.between(fake).double().mean().item() if len(fake) else float("nan")
    notes.append(f"between the bounds: {between:.1%} of {len(fake)} generated")
    drawn = fake[:shown]
    lines = [Lines(upper, SKY, f"upper bound (a = {curves.a_high:g})", width=3),
             Lines(lower, ORANGE, f"lower bound (a = {curves.a_low:g})", width=3)]
    if len(drawn) > 1:
        lines.append(Lines(drawn[1:], GREEN, "other generated", width=1, alpha=0.35))
    if len(drawn):
        lines.append(Lines(drawn[:1], GREEN, "a generated painting", width=2.5))
    span = (upper.max() - lower.min()).item()
    values = torch.cat([lower, upper, drawn.double().flatten()]) if len(drawn) else torch.cat([lower, upper])
    finite = values[values.isfinite()]
    ylim = (max(finite.min().item(), lower.min().item() - span) - 0.05 * span,
            min(finite.max().item(), upper.max().item() + span) + 0.05 * span)
    title = title if title is not None else f"generated paintings, {curves.formula}"
    return line_plot(curves.x, lines, title, "x", "y", notes=notes, ylim=ylim, size=size)


def _curves_report(inputs: EvalInputs, real: Tensor, fake: Tensor, train: Tensor | None, samples: int) -> Report:
    task, s = inputs.task, inputs.split
    curves = task.curves
    rep, _ = _energy(inputs, real, fake, train)
    gen, ref = curve_measures(curves, fake), curve_measures(curves, real)
    acc, score = task.discriminator_figures(real, fake)
    rep.scalars.update({f"{s}/between": gen["between"], f"{s}/ks_a": gen["ks_a"], f"{s}/residual": gen["residual"],
                        f"{s}/ks_a_real": ref["ks_a"], f"{s}/d_acc": acc, f"{s}/d_score": score})
    rep.details.update({
        "family": curves.spec(), "formula": curves.formula, "generated": len(fake), "real": len(real),
        "generated_between": gen["between"], "generated_ks_a": gen["ks_a"], "generated_residual": gen["residual"],
        "generated_a_mean": gen["a_mean"], "real_between": ref["between"], "real_ks_a": ref["ks_a"],
        "real_residual": ref["residual"], "real_a_mean": ref["a_mean"], "d_accuracy_real": acc, "d_score": score,
    })
    rows = [["between the bounds at every point", f"{gen['between']:.2%}", f"{ref['between']:.2%}"],
            [f"KS of fitted a vs uniform [{curves.a_low:g}, {curves.a_high:g}]", f"{gen['ks_a']:.4f}",
             f"{ref['ks_a']:.4f}"],
            ["mean residual from the family (RMS)", f"{gen['residual']:.4f}", f"{ref['residual']:.2g}"],
            ["mean fitted a", f"{gen['a_mean']:.4f}", f"{ref['a_mean']:.4f}"]]
    rep.tables.append(ReportTable(f"{len(fake)} generated paintings against {len(real)} real ones ({s}): "
                                  f"{curves.formula}", ["measure", "generated", "real"], rows, ["generated", "real"]))
    rep.notes.append(f"the discriminator: accuracy on real paintings {acc:.3f} (0.5 when D has converged), score "
                     f"{score:.3f} (-log 4 = -1.386 when G has converged)")
    rep.images["paintings"] = paintings_picture(task, fake, shown=samples, real=real,
                                                title=f"{inputs.meta.name} {s}: generated paintings, {curves.formula}")
    width = curves.a_high - curves.a_low
    rep.images["fitted_a"] = histogram(
        gen["a"], curves.a_low - 0.5 * width, curves.a_high + 0.5 * width,
        f"fitted a of {len(fake)} generated paintings: KS {gen['ks_a']:.4f} (real: {ref['ks_a']:.4f})",
        "a (least squares on the family)", reference=(curves.a_low, curves.a_high, 1 / width),
        reference_label=f"uniform [{curves.a_low:g}, {curves.a_high:g}]")
    return rep
