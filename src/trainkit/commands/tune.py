"""`trainkit tune [overrides]`: the learning rate and the batch size for the run `trainkit train` would make with the
same overrides. It builds that run's data, model and optimizer, trains a copy of the start state in its own directory
(outputs/tune/DATE/TIME: tune.json, lr_range.png) and prints the overrides to use; no training run is touched.

tune.mode=batch finds the batch size (on a GPU the largest that fits its memory, on a CPU the fastest in samples/s),
tune.mode=lr runs the learning-rate range test at data.batch_size, tune.mode=both (the default) the first, then the
second at the batch size found. The rules are in engine/tuning.py; docs/tuning.md explains them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table

from trainkit import build
from trainkit.commands import Context
from trainkit.engine import tuning
from trainkit.engine.loop import num_batches
from trainkit.errors import ConfigError
from trainkit.logging.text import shown

MODES = ("lr", "batch", "both")
CPU_MAX_BATCH = 1024  # tune.max_batch=null on a CPU: every power of two up to this is timed


@dataclass
class TuneOptions:
    mode: str = "both"
    lr_min: float = 1e-7
    lr_max: float = 10.0
    steps: int = 100
    smoothing: float = 0.98
    diverge: float = 4.0
    max_batch: int | None = None
    batch_steps: int = 5


def options(cfg: Any) -> TuneOptions:
    """The `tune.*` keys, each checked: a value that cannot work is an error that names the key and the fix."""
    values = build.to_dict(cfg.tune, "tune") if cfg.get("tune") is not None else {}
    opts = TuneOptions(**values)
    if opts.mode not in MODES:
        raise ConfigError(f"tune.mode={opts.mode} is not one of lr, batch, both: tune.mode=lr runs the learning-rate "
                          f"range test, tune.mode=batch the batch-size finder, tune.mode=both the two.")
    for key in ("lr_min", "lr_max"):
        value = getattr(opts, key)
        if not _number(value) or not (math.isfinite(value) and value > 0):
            raise ConfigError(f"tune.{key}={value} must be a learning rate above 0, e.g. tune.lr_min=1e-7 "
                              f"tune.lr_max=10.")
    if opts.lr_min >= opts.lr_max:
        raise ConfigError(f"tune.lr_min={opts.lr_min:g} must be below tune.lr_max={opts.lr_max:g}: the sweep goes "
                          f"from the first to the second, e.g. tune.lr_min=1e-7 tune.lr_max=10.")
    opts.steps = build.whole_number(opts.steps, "tune.steps", minimum=5, example=100)
    opts.batch_steps = build.whole_number(opts.batch_steps, "tune.batch_steps", minimum=1, example=5)
    if opts.max_batch is not None:
        opts.max_batch = build.whole_number(opts.max_batch, "tune.max_batch", minimum=1, example=4096)
    if not _number(opts.smoothing) or not 0 <= opts.smoothing < 1:
        raise ConfigError(f"tune.smoothing={opts.smoothing} must be from 0 (no smoothing) up to, not including, 1: "
                          f"the weight of the past in the loss curve's moving average, e.g. 0.98.")
    if not _number(opts.diverge) or not (math.isfinite(opts.diverge) and opts.diverge > 1):
        raise ConfigError(f"tune.diverge={opts.diverge} must be above 1: the sweep stops once the smoothed loss "
                          f"exceeds this many times its lowest, e.g. 4.")
    return opts


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run_tune(cfg: Any, ctx: Context) -> dict[str, Any]:
    opts = options(cfg)
    if cfg.get("resume"):
        raise ConfigError("resume= is not used by trainkit tune: it tunes the start of the run the overrides describe, "
                          "on a copy, and never reads or writes a training run. Remove resume=.")
    recipe = build.plain(cfg)
    build.preflight(recipe)  # every value `trainkit train` would check, before anything is built
    from trainkit.engine.rng import seed_everything

    seed_everything(int(recipe.get("seed") or 0))
    built = build.build_run(recipe)
    steps = num_batches(built.loaders["train"], built.settings.limit_train_batches)
    opt = tuning.plain_optimization(build.build_optimization(recipe, built.task, built.settings, built.device, steps))
    start = tuning.StartState(built.task, opt)
    result: dict[str, Any] = {"device": str(built.device), "mode": opts.mode, "options": asdict(opts)}
    size = int(recipe["data"]["batch_size"])
    try:
        if opts.mode in ("batch", "both"):
            result["batch"] = _find_batch(built, opt, start, opts, size)
            size = result["batch"]["suggestion"]
        if opts.mode in ("lr", "both"):
            start.restore()  # the batch finder's trials trained the model: the sweep starts where the run would
            result["lr"] = _range_test(built, opt, opts, size, ctx)
    finally:
        start.restore()
    result["overrides"] = _overrides(result)
    (ctx.run_dir / "tune.json").write_text(json.dumps(result, indent=2) + "\n")
    _print(ctx, result, size)
    return result


def _range_test(built: build.Built, opt: Any, opts: TuneOptions, size: int, ctx: Context) -> dict[str, Any]:
    from trainkit.reports.tuning import lr_range_image

    loader = tuning.with_batch_size(built.loaders["train"], size)
    lrs = tuning.lr_schedule(opts.lr_min, opts.lr_max, opts.steps)
    test = tuning.lr_range_test(built.task, loader, opt, lrs, opts.smoothing, opts.diverge)
    picture = ctx.run_dir / "lr_range.png"
    if test.lrs:
        title = f"learning-rate range test: {len(test.lrs)} steps at batch {size}"
        lr_range_image(test.lrs, test.losses, test.smoothed, test.suggestion, title).save(picture)
    return {**asdict(test), "batch_size": size, "picture": str(picture) if test.lrs else None,
            "rule": "the steepest descent of the smoothed loss against log lr, before its lowest point"}


def _find_batch(built: build.Built, opt: Any, start: tuning.StartState, opts: TuneOptions,
                current: int) -> dict[str, Any]:
    train, val, device = built.loaders["train"], built.loaders["val"], built.device
    cap = min(opts.max_batch or (train.num_samples if device.type == "cuda" else CPU_MAX_BATCH), train.num_samples)
    eval_size = built.settings.eval_batch_size
    trials: list[dict[str, Any]] = []
    if device.type == "cuda":
        def fits(size: int) -> bool:
            start.restore()
            ok = tuning.fits(built.task, tuning.with_batch_size(train, size),
                             tuning.with_batch_size(val, eval_size or 4 * size), opt, device)
            trials.append({"batch_size": size, "fits": ok})
            return ok

        found = tuning.largest_fitting(fits, current, cap)
        if found is None:
            raise tuning.TuneError(f"not even a batch of 1 fits in {device}'s memory with this model: make model.* "
                                   f"smaller, or use trainer.precision=bf16-mixed.")
        rule = f"the largest batch whose training and validation steps fit {device}'s memory (up to {cap})"
        return {"suggestion": found, "rule": rule, "trials": trials}
    for size in tuning.powers_of_two(cap):
        start.restore()
        seconds = tuning.timed_steps(built.task, tuning.with_batch_size(train, size), opt, opts.batch_steps,
                                     lambda: None)
        trials.append({"batch_size": size, "samples_per_s": size * opts.batch_steps / seconds})
        tuning.free_memory(device)
    best = max(trials, key=lambda t: t["samples_per_s"])["batch_size"]
    return {"suggestion": best, "rule": f"the most samples/s on the CPU among powers of two up to {cap}",
            "trials": trials}


def _overrides(result: dict[str, Any]) -> list[str]:
    out = []
    if "batch" in result:
        out.append(f"data.batch_size={result['batch']['suggestion']}")
    if result.get("lr", {}).get("suggestion") is not None:
        out.append(f"optimizer.lr={result['lr']['suggestion']:.3g}")
    return out


def _print(ctx: Context, result: dict[str, Any], size: int) -> None:
    console = ctx.console
    if "batch" in result:
        table = Table(title=f"batch-size finder on {result['device']}: {result['batch']['rule']}")
        columns = [k for k in result["batch"]["trials"][0] if k != "batch_size"] if result["batch"]["trials"] else []
        table.add_column("data.batch_size", justify="right")
        for column in columns:
            table.add_column(column.replace("_", " "), justify="right")
        for trial in result["batch"]["trials"]:
            table.add_row(str(trial["batch_size"]), *(_cell(trial[c]) for c in columns))
        console.print(table)
    if "lr" in result:
        lr = result["lr"]
        console.print(f"learning-rate range test at batch {size}: {len(lr['lrs'])} steps from {lr['lrs'][0]:.3g} "
                      f"({lr['stopped']})." if lr["lrs"] else f"learning-rate range test: {lr['stopped']}.",
                      highlight=False)
        if lr["suggestion"] is None:
            console.print("[yellow]no suggestion:[/yellow] the smoothed loss never fell. Widen the sweep "
                          "(tune.lr_max, tune.steps) or check the data.", highlight=False)
        if lr["picture"]:
            console.print(f"loss against learning rate: {shown(lr['picture'])}", highlight=False)
    console.print(f"tune results: {shown(ctx.run_dir / 'tune.json')}", highlight=False)
    if result["overrides"]:
        console.print(f"use: [bold]{' '.join(result['overrides'])}[/bold]", highlight=False)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "out of memory"
    return f"{value:,.0f}" if isinstance(value, float) else str(value)

