"""`trainkit sample ckpt=PATH n=64`: new samples from a model that generates, as a PNG a person can look at.

What a sample is belongs to the task (`Task.sample`): a GAN of images draws a grid of `n` images; a GAN of
(x, y) points plots them over real ones and writes the points as CSV beside the picture. A task that does not
generate says so. The same seed draws the same samples.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from trainkit.commands import Context
from trainkit.errors import ConfigError
from trainkit.logging.text import shown
from trainkit.restore import restore
from trainkit.tasks.base import CannotDo


def run_sample(cfg: DictConfig, ctx: Context) -> dict[str, Any]:
    run_dir, console = ctx.run_dir, ctx.console
    n = int(cfg.n)
    if n < 1:
        raise ConfigError(f"n={n} must be at least 1: the number of samples to draw.")
    restored = restore(cfg.ckpt, cfg, line=ctx.line)
    seed = int(restored.recipe.seed)
    try:
        drawn = restored.task.sample(n, seed, int(cfg.nrow) if cfg.get("nrow") else None)
    except CannotDo as err:
        raise CannotDo(f"ckpt={restored.path}: {err}") from None
    output = Path(str(cfg.output)).expanduser() if cfg.get("output") else run_dir / "samples.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    drawn.image.save(output)
    result: dict[str, Any] = {"checkpoint": str(restored.path), "n": n, "seed": seed, "output": str(output)}
    console.print(f"wrote {n} samples (seed {seed}) to [bold]{shown(output)}[/bold]", highlight=False)
    if drawn.table is not None:
        result["points"] = str(output.with_suffix(".csv"))
        header, rows = drawn.table
        with open(result["points"], "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
        console.print(f"generated points: {shown(result['points'])}", highlight=False)
    return result
