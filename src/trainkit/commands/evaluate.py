"""`trainkit eval ckpt=PATH`: rebuild model and data from the checkpoint's own config, evaluate a split,
print a table and write metrics.json. Overrides on the command line change the stored config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from trainkit.build import ConfigError, build_run
from trainkit.engine import checkpoint
from trainkit.engine.loop import evaluate
from trainkit.engine.optimization import Precision
from trainkit.engine.rng import seed_everything

RECIPE_KEYS = ("data", "model", "optimizer", "scheduler", "trainer", "seed")  # overridable in the stored config


def stored_config(payload: dict[str, Any], cfg: DictConfig) -> DictConfig:
    """The checkpoint's config with this command's `data.*`, `trainer.*`, ... overrides merged on top."""
    stored = OmegaConf.create(payload["config"])
    overrides = {k: OmegaConf.to_container(cfg[k]) if isinstance(cfg[k], DictConfig) else cfg[k]
                 for k in RECIPE_KEYS if k in cfg}
    return OmegaConf.merge(stored, overrides)  # type: ignore[return-value]


def run_eval(cfg: DictConfig, run_dir: Path, console: Console) -> dict[str, Any]:
    payload = checkpoint.load(cfg.ckpt)
    recipe = stored_config(payload, cfg)
    seed_everything(recipe.seed)
    built = build_run(recipe)
    checkpoint.load_modules(payload, built.task.modules(), cfg.ckpt)
    split = str(cfg.split)
    if split not in ("test", "val"):
        raise ConfigError(f"split={split!r}: choose split=test or split=val.")
    if split not in built.loaders:
        raise ConfigError(
            f"the checkpoint's data config has no labeled test split to evaluate "
            f"(data={built.data.meta.name}). Give one (e.g. data.test_csv=PATH for mnist_csv) or use split=val."
        )
    precision = Precision(built.settings.precision, built.device)
    metrics = evaluate(built.task, built.loaders[split], precision.autocast, f"{split}/", built.settings.limit_eval_batches)
    result = {
        "checkpoint": str(cfg.ckpt),
        "epoch": payload["fit"]["epoch"],
        "split": split,
        "samples": built.loaders[split].num_samples,
        "metrics": metrics,
    }
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title=f"trainkit eval: {cfg.ckpt} (epoch {result['epoch']}, {result['samples']} {split} samples)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}")
    console.print(table)
    console.print(f"metrics written to [bold]{run_dir / 'metrics.json'}[/bold]", highlight=False)
    return result
