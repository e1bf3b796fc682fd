"""`trainkit sample ckpt=PATH n=64`: new samples from a trained GAN, as a PNG a person can look at.

Images: a grid of `n` generated images. Points (a GAN of regression data): a plot of the generated points
over real ones from the data, and the points themselves as CSV. The same seed draws the same samples.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console

from trainkit.commands.evaluate import restore
from trainkit.errors import ConfigError
from trainkit.reports.render import GREEN, RED, Series, image_grid, scatter_plot


def run_sample(cfg: DictConfig, run_dir: Path, console: Console) -> dict[str, Any]:
    n = int(cfg.n)
    if n < 1:
        raise ConfigError(f"n={n} must be at least 1: the number of samples to draw.")
    restored = restore(cfg)
    task = restored.built.task
    if "gan" not in task.modules():
        raise ConfigError(f"{restored.path} is not a GAN (it is a model={restored.recipe.model.name} checkpoint): "
                          f"only a GAN draws new samples. Judge this one with `trainkit eval ckpt={restored.path}`.")
    seed = int(restored.recipe.seed)
    fake = task.generate(n, seed=seed)
    output = Path(str(cfg.output)).expanduser() if cfg.get("output") else run_dir / "samples.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"checkpoint": str(restored.path), "n": n, "seed": seed, "output": str(output)}
    if task.joint:
        data = restored.built.data
        real = data.test if data.test is not None else data.val
        real_points = [real.x.float().flatten(1)[:, :1], real.y.float().flatten(1)[:, :1]]
        import torch

        title = f"{n} generated points (seed {seed}) over {len(real)} real ones, epoch {restored.epoch}"
        scatter_plot([Series(torch.cat(real_points, 1), GREEN, "real"), Series(fake, RED, "generated")],
                     title, "x", "y").save(output)
        points = output.with_suffix(".csv")
        with open(points, "w", newline="") as f:
            csv.writer(f).writerows([["x", "y"], *([f"{v:.9g}" for v in row] for row in fake.tolist())])
        result["points"] = str(points)
    else:
        nrow = int(cfg.nrow) if cfg.get("nrow") else max(1, round(math.sqrt(n)))
        image_grid(fake, nrow=nrow).save(output)
    from trainkit.commands.train import _shown

    console.print(f"wrote {n} samples (seed {seed}) to [bold]{_shown(output)}[/bold]", highlight=False)
    if "points" in result:
        console.print(f"generated points: {_shown(Path(result['points']))}", highlight=False)
    return result
