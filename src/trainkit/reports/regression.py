"""The regression report: MSE, MAE, RMSE, R², predictions plotted against targets, and for
one-dimensional inputs the fitted curve over the data."""

from __future__ import annotations

import torch

from trainkit.reports.base import EvalInputs, Report
from trainkit.reports.inference import collect
from trainkit.reports.measures import r2_score, subsample
from trainkit.reports.render import GREEN, RED, Series, scatter_plot

MAX_DRAWN = 3000  # points per plot: enough to see the shape, few enough to draw quickly


def report(inputs: EvalInputs) -> Report:
    predictions, targets = collect(inputs.task.outputs, inputs.loader, inputs.autocast, inputs.limit)
    p, t = predictions.reshape(len(predictions), -1), targets.float().reshape(len(targets), -1)
    err = p - t
    mse, mae, r2 = err.pow(2).mean().item(), err.abs().mean().item(), r2_score(p, t)
    s = inputs.split
    scalars = {f"{s}/mse": mse, f"{s}/rmse": mse ** 0.5, f"{s}/r2": r2}
    title = f"{inputs.meta.name} {s}: R^2 {r2:.4f}, MAE {mae:.4g}, {len(t)} samples"
    pairs = subsample(torch.stack([t[:, 0], p[:, 0]], 1), MAX_DRAWN)
    images = {"predictions": scatter_plot([Series(pairs, RED, "samples")], title, "target", "prediction",
                                          diagonal=True)}
    x = inputs.raw.float().reshape(len(t), -1)
    if x.shape[1] == 1:  # one input: draw the learned function over the data
        picked = subsample(torch.arange(len(t)), MAX_DRAWN)
        images["fit"] = scatter_plot(
            [Series(torch.stack([x[picked, 0], t[picked, 0]], 1), GREEN, "target"),
             Series(torch.stack([x[picked, 0], p[picked, 0]], 1), RED, "prediction")],
            title, "x", "y")
    details = {"mse": mse, "mae": mae, "rmse": mse ** 0.5, "r2": r2, "samples": len(t)}
    return Report(scalars, details, images)
