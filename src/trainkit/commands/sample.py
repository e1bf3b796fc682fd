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

from trainkit.build import not_the_checkpoint, whole_number
from trainkit.commands import Context
from trainkit.logging.text import shown
from trainkit.restore import restore, task_member
from trainkit.tasks.base import CannotDo


def run_sample(cfg: DictConfig, ctx: Context) -> dict[str, Any]:
    run_dir, console = ctx.run_dir, ctx.console
    n = whole_number(cfg.get("n"), "n", 1, 64)  # the number of samples to draw
    nrow = None if cfg.get("nrow") is None else whole_number(cfg.nrow, "nrow", 1, 8)  # images per row of the grid
    restored = restore(cfg.ckpt, cfg, line=ctx.line)
    seed = int(restored.recipe.seed)
    output = Path(str(cfg.output)).expanduser() if cfg.get("output") else run_dir / "samples.png"
    if output.is_dir():
        output = output / "samples.png"
    not_the_checkpoint(output, restored.path)
    try:
        drawn = task_member(restored, "sample")(n, seed, nrow)
    except CannotDo as err:
        raise CannotDo(f"ckpt={restored.path}: {err}") from None
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
