"""`trainkit eval ckpt=PATH`: rebuild model and data from the checkpoint's own config, evaluate a split and
write its report: metrics.json with every number, pictures as PNG and in TensorBoard, tables on the console.
Overrides on the command line change the stored config. `restore` is shared by predict, export and sample."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from trainkit.build import Built, build_run, build_task
from trainkit.engine import checkpoint
from trainkit.engine.loop import evaluate, num_batches
from trainkit.engine.optimization import Precision
from trainkit.engine.rng import seed_everything
from trainkit.errors import ConfigError
from trainkit.reports.base import EvalInputs, Report

RECIPE_KEYS = ("data", "model", "optimizer", "scheduler", "trainer", "seed")  # overridable in the stored config


def stored_config(payload: dict[str, Any], cfg: DictConfig) -> DictConfig:
    """The checkpoint's config with this command's `data.*`, `trainer.*`, ... overrides merged on top."""
    stored = OmegaConf.create(payload["config"])
    overrides = {k: OmegaConf.to_container(cfg[k]) if isinstance(cfg[k], DictConfig) else cfg[k]
                 for k in RECIPE_KEYS if k in cfg}
    return OmegaConf.merge(stored, overrides)  # type: ignore[return-value]


@dataclass
class Restored:
    """A checkpoint brought back: its payload, its recipe (overrides applied), the run built from it."""

    path: Path
    payload: dict[str, Any]
    recipe: DictConfig
    built: Built

    @property
    def epoch(self) -> int:
        return self.payload["fit"]["epoch"]

    @property
    def autocast(self) -> Any:
        return Precision(self.built.settings.precision, self.built.device).autocast


def restore(cfg: DictConfig) -> Restored:
    """Model and data from `cfg.ckpt`'s own recipe, weights loaded, every module in eval mode."""
    payload = checkpoint.load(cfg.ckpt)
    recipe = stored_config(payload, cfg)
    seed_everything(recipe.seed)
    built = build_run(recipe)
    checkpoint.load_modules(payload, built.task.modules(), cfg.ckpt)
    for module in built.task.modules().values():
        module.eval()  # after training: no dropout, no batch statistics
    return Restored(Path(cfg.ckpt), payload, recipe, built)


@dataclass
class EvalOptions:
    misclassified: int = 32  # classification: the most confidently misclassified images in misclassified.png
    samples: int = 64  # GAN: generated images in samples.png
    feature_ckpt: str | None = None  # GAN on images: a classifier checkpoint trained on the same data


def _options(cfg: DictConfig) -> EvalOptions:
    opts = EvalOptions(**OmegaConf.to_container(cfg.eval, resolve=True)) if "eval" in cfg else EvalOptions()
    if opts.misclassified < 0 or opts.samples < 1:
        raise ConfigError(f"eval.misclassified={opts.misclassified} must be 0 or more and eval.samples="
                          f"{opts.samples} at least 1.")
    return opts


def run_eval(cfg: DictConfig, run_dir: Path, console: Console) -> dict[str, Any]:
    opts = _options(cfg)
    restored = restore(cfg)
    built = restored.built
    split = str(cfg.split)
    if split not in ("test", "val"):
        raise ConfigError(f"split={split!r}: choose split=test or split=val.")
    if split not in built.loaders:
        raise ConfigError(
            f"the checkpoint's data config has no labeled test split to evaluate "
            f"(data={built.data.meta.name}). Give one (e.g. data.test_csv=PATH for mnist_csv) or use split=val."
        )
    loader = built.loaders[split]
    limit = num_batches(loader, built.settings.limit_eval_batches)  # a count, or a fraction of the split
    metrics = evaluate(built.task, loader, restored.autocast, f"{split}/", limit)
    samples = min(loader.num_samples, limit * loader.batch_size)
    data = built.data.test if split == "test" else built.data.val
    inputs = EvalInputs(built.task, loader, data.x[:samples], data.y[:samples], built.data.meta, split,
                        restored.autocast, limit)
    report = _report(inputs, restored, opts)
    metrics.update(report.scalars)
    files = {name: run_dir / f"{name}.png" for name in report.images}
    for name, image in report.images.items():
        image.save(files[name])
    if built.settings.tensorboard:
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


def _report(inputs: EvalInputs, restored: Restored, opts: EvalOptions) -> Report:
    from trainkit.tasks.classification import ClassificationTask
    from trainkit.tasks.gan import GANTask

    task = inputs.task
    if isinstance(task, GANTask):
        from trainkit.reports import gan

        classifier = None if task.joint or not opts.feature_ckpt else _feature_classifier(opts.feature_ckpt, restored)
        train = restored.built.data.train
        rep = gan.report(inputs, train.x, train.y, opts.samples, classifier)
        if task.joint and opts.feature_ckpt:
            rep.notes.append("eval.feature_ckpt is for GANs on images; for points the raw-value distance is reported")
        return rep
    if isinstance(task, ClassificationTask):
        from trainkit.reports import classification

        return classification.report(inputs, opts.misclassified)
    from trainkit.reports import regression

    return regression.report(inputs)


def _feature_classifier(path: str, restored: Restored) -> Any:
    """The classifier of `eval.feature_ckpt`, rebuilt for the GAN's data (its own data is not read)."""
    from trainkit.tasks.classification import ClassificationTask

    payload = checkpoint.load(path)
    recipe = OmegaConf.create(payload["config"])
    meta = restored.built.data.meta
    theirs = OmegaConf.select(recipe, "data.name")
    if theirs != meta.name:
        raise ConfigError(
            f"eval.feature_ckpt={path} was trained on data={theirs}, this GAN on data={meta.name}: the Fréchet "
            f"distance needs a classifier of the same data. Train one, e.g. `trainkit train model=cnn "
            f"data={meta.name} ...`, and give its best.ckpt."
        )
    task = build_task(recipe, meta)
    if not isinstance(task, ClassificationTask):
        raise ConfigError(f"eval.feature_ckpt={path} is a {OmegaConf.select(recipe, 'model.name')} checkpoint, "
                          f"not a classifier: give a checkpoint of model=mlp or model=cnn on data={meta.name}.")
    checkpoint.load_modules(payload, task.modules(), path)
    task.net.to(restored.built.device).eval()
    return task


def _tensorboard(run_dir: Path, epoch: int, split: str, metrics: dict[str, float], report: Report) -> None:
    from trainkit.logging.tensorboard import TensorBoardLog  # tensorboard is slow to import
    from trainkit.reports.render import to_tensor

    tb = TensorBoardLog(run_dir / "tensorboard")
    try:
        tb.scalars(epoch, metrics)
        for name, image in report.images.items():
            tb.image(f"{split}/{name}", to_tensor(image), epoch)
    finally:
        tb.close()


def _print(console: Console, cfg: DictConfig, result: dict[str, Any], report: Report, run_dir: Path) -> None:
    from trainkit.commands.train import _num, _shown

    split = result["split"]
    table = Table(title=f"trainkit eval: {cfg.ckpt} (epoch {result['epoch']}, {result['samples']} {split} samples)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["metrics"].items():
        table.add_row(key, _num(value))
    console.print(table)
    per_class = report.details.get("per_class")
    if per_class:
        classes = Table(title=f"{split} accuracy per class")
        for column in ("class", "samples", "accuracy", "most often taken for"):
            classes.add_column(column, justify="left" if column == "class" else "right")
        for row in per_class:
            acc = "" if row["accuracy"] is None else f"{row['accuracy']:.2%}"
            classes.add_row(row["class"], str(row["samples"]), acc, row["most_confused_with"] or "")
        console.print(classes)
    for note in report.notes:
        console.print(note, highlight=False)
    for name, path in result["files"].items():
        console.print(f"{name.replace('_', ' ')}: {_shown(Path(path))}", highlight=False)
    console.print(f"metrics written to [bold]{_shown(run_dir / 'metrics.json')}[/bold]", highlight=False)
