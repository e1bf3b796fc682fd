"""Numbers that judge a trained model: confusion matrix, R², distances between two sets of samples, and how far a
sample of numbers is from a uniform distribution.

Plain tensor functions, float64 where sums of squares or matrix square roots would lose precision.
"""

from __future__ import annotations

import torch
from torch import Tensor


def confusion_matrix(targets: Tensor, predictions: Tensor, num_classes: int) -> Tensor:
    """int64 num_classes×num_classes: row = true class, column = predicted class."""
    flat = targets.long().flatten() * num_classes + predictions.long().flatten()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(matrix: Tensor) -> list[float | None]:
    """The recall of each class (correct / samples of that class); None for a class with no samples."""
    totals = matrix.sum(1).tolist()
    return [None if n == 0 else matrix[i, i].item() / n for i, n in enumerate(totals)]


def r2_score(predictions: Tensor, targets: Tensor) -> float:
    """Coefficient of determination, averaged over target columns: 1 is perfect, 0 is predicting the mean."""
    p = predictions.double().reshape(len(predictions), -1)
    t = targets.double().reshape(len(targets), -1)
    ss_res = (t - p).pow(2).sum(0)
    ss_tot = (t - t.mean(0)).pow(2).sum(0).clamp_min(1e-12)
    return (1 - ss_res / ss_tot).mean().item()


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """‖μa − μb‖² + tr(Σa + Σb − 2(Σa Σb)^½) between Gaussians fitted to the rows of `a` and of `b`
    (the FID formula, in whatever feature space the rows come from)."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = _cov(a), _cov(b)
    # tr((Σa Σb)^½) = tr((Σa^½ Σb Σa^½)^½): the inner matrix is symmetric PSD, so eigvalsh is stable.
    vals, vecs = torch.linalg.eigh(cov_a)
    root_a = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
    inner = root_a @ cov_b @ root_a
    tr_root = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    fd = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * tr_root
    return max(fd.item(), 0.0)


def _cov(x: Tensor) -> Tensor:
    centered = x - x.mean(0)
    return centered.T @ centered / max(len(x) - 1, 1)


def energy_distance(a: Tensor, b: Tensor) -> float:
    """2·E‖a − b‖ − E‖a − a'‖ − E‖b − b'‖ (V-statistic, never negative); 0 when the sets are equal.
    Quadratic in memory: callers pass a few thousand rows at most."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    d = 2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean()
    return max(d.item(), 0.0)


def ks_uniform(values: Tensor, low: float, high: float) -> float:
    """The one-sample Kolmogorov–Smirnov statistic of `values` against the uniform distribution on [low, high]: the
    largest gap between their empirical distribution function and the uniform one (0: a perfect match, 1: every
    value outside the range). n values drawn from that uniform reach about 0.87/√n on average."""
    v = values.double().flatten().sort().values
    n = len(v)
    if n == 0:
        return float("nan")
    cdf = ((v - low) / (high - low)).clamp(0, 1)
    steps = torch.arange(1, n + 1, dtype=torch.float64) / n
    return max((steps - cdf).max().item(), (cdf - (steps - 1 / n)).max().item())


def subsample(x: Tensor, n: int, seed: int = 0) -> Tensor:
    """At most `n` rows of `x`, picked without replacement by a seeded permutation."""
    if len(x) <= n:
        return x
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]
