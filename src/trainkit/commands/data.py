"""`trainkit data check data=... [preview=PATH]` (is this data set what training will need? what does its first
batch look like?) and `trainkit data prepare mnist-csv` (MNIST CSV files from the original IDX files)."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from trainkit import registry
from trainkit.build import LOADER_KEYS, build_data, build_loaders, to_dict
from trainkit.commands import Context
from trainkit.data.base import DataError, DataSplits
from trainkit.data.check import Report, summarize
from trainkit.errors import UserError

PREVIEW_IMAGES = 64  # of the first batch, in the preview: 8 rows of 8 stay legible


class CheckFailed(DataError):
    """A fatal problem found by `data check`. Its run directory is the working directory: never removed."""

    keeps_run_dir = True


def check(cfg: DictConfig, ctx: Context) -> dict[str, Any]:
    """Load the data as `trainkit train` would, print a summary and every problem; raise if one is fatal."""
    try:
        return _check(cfg, ctx.console)
    except CheckFailed:
        raise
    except UserError as err:  # e.g. a required key with no value: same exit, and the working dir stays
        raise CheckFailed(str(err)) from None


def _check(cfg: DictConfig, console: Console) -> dict[str, Any]:
    name = cfg.data.get("name")
    console.print(f"trainkit data check: data={name}", highlight=False)
    try:
        data = build_data(cfg)
    except DataError as err:
        problems = [str(err)] + [p for p in _every_problem(cfg) if p not in str(err)]
        _print_problems(console, "fatal", problems)
        raise CheckFailed(f"data={name} has {len(problems)} fatal problem{'s' * (len(problems) > 1)} (listed "
                          f"above); training would stop at the first: {err}") from None
    report = summarize(data)
    _print_report(console, report)
    result = report.as_dict()
    if cfg.get("preview"):
        written = _preview(cfg, data, Path(str(cfg.preview)).expanduser(), console)
        if written is not None:
            result["preview"] = str(written)
    if report.fatal:
        raise CheckFailed(f"data={name}: {' '.join(report.fatal)}")
    return result


def _preview(cfg: DictConfig, data: DataSplits, path: Path, console: Console) -> Path | None:
    """The first batch of training epoch 1 as a captioned grid at `path`, from the loader training builds
    (data.batch_size, data.augment, seed), on the CPU: the same samples, crops and flips; None: not images."""
    import torch
    from PIL import Image

    from trainkit.engine.settings import TrainerSettings
    from trainkit.reports.preview import input_grid

    loader = build_loaders(cfg, data, torch.device("cpu"), TrainerSettings())["train"]
    x, y = loader.preview(epoch=1)
    image = input_grid(x, y, data.meta, max_images=PREVIEW_IMAGES)
    if image is None:
        shape = "×".join(map(str, data.meta.in_shape))
        console.print(f"preview: nothing to preview, data={data.meta.name} is not images (one sample has shape "
                      f"{shape}, not C×H×W); nothing written.", highlight=False)
        return None
    if path.is_dir():
        path = path / "first_batch.png"
    known = path.suffix.lower() in Image.registered_extensions()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format=None if known else "PNG")
    except OSError as err:
        raise DataError(f"data check: cannot write the preview to {path} ({err}). Set preview= to a file in a "
                        f"folder you can write to, e.g. preview=first_batch.png.") from None
    shown = min(len(x), PREVIEW_IMAGES)
    augmented = ", augmented as data.augment says" if loader.augment is not None else ""
    console.print(f"preview: wrote the first training batch of epoch 1 ({shown} of its {len(x)} images"
                  f"{augmented}) to {path}", highlight=False, markup=False)
    return path


def _every_problem(cfg: DictConfig) -> list[str]:
    """The reader's own full scan (`find_problems`), where it has one: every bad row, not only the first."""
    values = to_dict(cfg.data, "data")
    reader = registry.DATASETS.get(values["name"]).load()
    finder = getattr(importlib.import_module(reader.__module__), "find_problems", None)
    return [] if finder is None else finder(**{k: v for k, v in values.items() if k not in LOADER_KEYS})


def _print_problems(console: Console, kind: str, problems: list[str]) -> None:
    for problem in problems:
        console.print(f"[bold red]{kind}:[/bold red] " if kind == "fatal" else "[yellow]warning:[/yellow] ",
                      end="")
        console.print(problem, markup=False, highlight=False)


def _print_report(console: Console, report: Report) -> None:
    meta = report.meta
    norm = "no normalization" if meta.mean is None else f"normalized with mean {list(meta.mean)} std {list(meta.std)}"
    scale = f"values / {meta.scale:g}, then " if meta.scale != 1 else ""
    first = report.splits[0]
    console.print(f"{meta.kind}, {meta.num_outputs} {'targets' if meta.target_shape else 'classes'}; "
                  f"one sample is {'×'.join(map(str, first.shape))} {first.dtype}; batches: {scale}{norm}",
                  highlight=False)
    table = Table(title="splits (mean and std per channel, of the values / scale)")
    for column in ("split", "samples", "labeled", "range", "mean", "std"):
        table.add_column(column, justify="left" if column == "split" else "right", no_wrap=column != "split")
    fmt = lambda values: " ".join(f"{v:.3f}" for v in values[:3]) + (" …" if len(values) > 3 else "")  # noqa: E731
    for s in report.splits:
        table.add_row(s.name, str(s.samples), "yes" if s.labeled else "no", f"{s.min:g}–{s.max:g}", fmt(s.mean),
                      fmt(s.std))
    console.print(table)
    counted = [s for s in report.splits if s.class_counts is not None]
    if counted:
        hist = Table(title="samples per class")
        hist.add_column("class")
        for s in counted:
            hist.add_column(s.name, justify="right")
        names = meta.class_names or [str(i) for i in range(meta.num_outputs)]
        for c, label in enumerate(names):
            hist.add_row(f"{c} {label}" if label != str(c) else label, *(str(s.class_counts[c]) for s in counted))
        console.print(hist)
    _print_problems(console, "fatal", report.fatal)
    _print_problems(console, "warning", report.warnings)
    if not report.fatal and not report.warnings:
        console.print("no problems found", highlight=False)


def prepare(argv: list[str]) -> int:
    """`trainkit data prepare mnist-csv --source DIR --out DIR [--download]`; returns the exit code."""
    parser = argparse.ArgumentParser(prog="trainkit data prepare", description="Write data sets in the layouts "
                                     "trainkit reads.")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="{mnist-csv}")
    mnist = kinds.add_parser("mnist-csv", help="MNIST CSV files (Kaggle and headerless layouts) from the IDX files",
                             description="Write train.csv, test.csv (Kaggle layout, labeled), test_unlabeled.csv "
                             "(Kaggle's test layout, no label column) and mnist_train.csv, mnist_test.csv "
                             "(headerless) from the original MNIST IDX files.")
    mnist.add_argument("--source", required=True, type=Path, help="folder with the IDX files (gzipped or not; "
                       "also its raw/ or MNIST/raw/, torchvision's layout); with --download, where to fetch them")
    mnist.add_argument("--out", required=True, type=Path, help="folder to write the CSV files into")
    mnist.add_argument("--download", action="store_true", help="fetch the IDX files through torchvision first "
                       "(checksummed; skipped when they are there)")
    args = parser.parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    from trainkit.data.prepare import prepare_mnist_csv

    written = prepare_mnist_csv(args.source, args.out, download=args.download)  # an error: the CLI says it
    table = Table(title=f"MNIST CSV files in {args.out}")
    for column in ("file", "layout", "rows", "labels", "MB"):
        table.add_column(column, justify="right" if column in ("rows", "MB") else "left")
    for w in written:
        table.add_row(w.path.name, w.layout, f"{w.rows:,}", "yes" if w.labeled else "no",
                      f"{w.path.stat().st_size / 1e6:.1f}")
    console.print(table)
    console.print(f"train on them: trainkit train data=mnist_csv data.train_csv={args.out / 'train.csv'} "
                  f"data.test_csv={args.out / 'test.csv'}", markup=False)
    return 0
