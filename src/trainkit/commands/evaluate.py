"""`trainkit eval ckpt=PATH`: the checkpoint's task, rebuilt from the checkpoint alone, judged on one split that
is read from its data config: metrics.json with every number, pictures as PNG and in TensorBoard, tables on the
console. What the report holds is the task's to say. Overrides on the command line change the stored config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from trainkit.commands import Context
from trainkit.engine.loop import evaluate, num_batches
from trainkit.errors import ConfigError
from trainkit.logging.text import number, shown
from trainkit.registry import call_with
from trainkit.reports.base import EvalInputs, NoOptions, Report
from trainkit.restore import eval_loader, read_split, restore, task_member


def _options(cfg: DictConfig, task: Any) -> Any:
    """The task's own `eval.*` options (its `eval_options` dataclass): a key it does not have names the ones it has."""
    values = OmegaConf.to_container(cfg.eval, resolve=True) if cfg.get("eval") is not None else {}
    if not isinstance(values, dict):
        raise ConfigError(f"eval={values!r} is not a group of options: give them as eval.KEY=VALUE.")
    return call_with(getattr(task, "eval_options", NoOptions), values, "eval", f"the report of this checkpoint's task "
                     f"({type(task).__name__})")


def run_eval(cfg: DictConfig, ctx: Context) -> dict[str, Any]:
    run_dir, console = ctx.run_dir, ctx.console
    split = str(cfg.split)
    if split not in ("test", "val"):
        raise ConfigError(f"split={split!r}: choose split=test or split=val.")
    restored = restore(cfg.ckpt, cfg, line=ctx.line)
    task = restored.task
    opts = _options(cfg, task)
    data, train = read_split(restored, split, with_train=bool(getattr(task, "report_uses_train", False)))
    stored = data.test if split == "test" else data.val
    if stored is None or stored.y is None:
        raise ConfigError(
            f"the checkpoint's data config has no labeled test split to evaluate "
            f"(data={restored.meta.name}). Give one (e.g. data.test_csv=PATH for mnist_csv) or use split=val."
        )
    loader = eval_loader(restored, stored)
    limit = num_batches(loader, restored.settings.limit_eval_batches)  # a count, or a fraction of the split
    metrics = evaluate(task, loader, restored.autocast, f"{split}/", limit)
    samples = min(loader.num_samples, limit * loader.batch_size)
    inputs = EvalInputs(task, loader, stored.x[:samples], stored.y[:samples], restored.meta, split,
                        restored.autocast, limit, train, restore=lambda path: restore(path, line=ctx.line).task)
    report = task_member(restored, "report")(inputs, opts)
    metrics.update(report.scalars)
    files = {name: run_dir / f"{name}.png" for name in report.images}
    for name, image in report.images.items():
        image.save(files[name])
    if restored.settings.tensorboard:
        _tensorboard(run_dir, restored.epoch, split, metrics, report)
    result = {
        "checkpoint": str(cfg.ckpt),
        "epoch": restored.epoch,
        "split": split,
        "samples": samples,
        "metrics": metrics,
        "report": report.details,
        "files": {name: str(path) for name, path in files.items()},
    }
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    _print(console, cfg, result, report, run_dir)
    return result


def _tensorboard(run_dir: Path, epoch: int, split: str, metrics: dict[str, float], report: Report) -> None:
    from trainkit.logging.trackers.tensorboard import TensorBoardLog
    from trainkit.reports.render import to_tensor

    tb = TensorBoardLog(run_dir / "tensorboard")
    try:
        tb.scalars(epoch, metrics)
        for name, image in report.images.items():
            tb.image(f"{split}/{name}", to_tensor(image), epoch)
    finally:
        tb.close()


def _print(console: Console, cfg: DictConfig, result: dict[str, Any], report: Report, run_dir: Path) -> None:
    split = result["split"]
    table = Table(title=f"trainkit eval: {cfg.ckpt} (epoch {result['epoch']}, {result['samples']} {split} samples)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["metrics"].items():
        table.add_row(key, number(value))
    console.print(table)
    for shown_table in report.tables:
        table = Table(title=shown_table.title)
        for column in shown_table.columns:
            table.add_column(column, justify="right" if column in shown_table.right else "left")
        for row in shown_table.rows:
            table.add_row(*row)
        console.print(table)
    for note in report.notes:
        console.print(note, highlight=False)
    for name, path in result["files"].items():
        console.print(f"{name.replace('_', ' ')}: {shown(path)}", highlight=False)
    console.print(f"metrics written to [bold]{shown(run_dir / 'metrics.json')}[/bold]", highlight=False)
