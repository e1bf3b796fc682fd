"""The only place below the shells where a composed config becomes objects: names are looked up in registries, never
an import path (`_target_`) from the config. A config stored in a checkpoint may come from anywhere, and must not
choose what code runs. Nothing below this module imports Hydra or OmegaConf.

`build_trainer(cfg, run_dir)` turns a whole training config into a ready Trainer (`trainkit train`, `trainkit.train`,
`trainkit.make_trainer`, benchmarks/); the functions it uses build each part (data, loaders, task, optimization,
trackers) and serve restore.py and the other commands. Each takes the composed DictConfig or the same config as
plain nested dicts.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from trainkit import registry
from trainkit.data.base import DataError, DataMeta, DataSplits, Split
from trainkit.data.loader import Augment, BatchLoader
from trainkit.engine import distributed
from trainkit.engine.device import resolve_device
from trainkit.engine.optimization import Optimization, Precision
from trainkit.engine.settings import TrainerSettings
from trainkit.errors import ConfigError
from trainkit.registry import call_with
from trainkit.tasks.base import Task

# data.* keys for the batch loader and the trainer, not the reader
LOADER_KEYS = {"name", "batch_size", "augment", "on_device", "allow_missing_classes"}


def plain(cfg: Any) -> dict[str, Any]:
    """A config as plain nested dicts: a DictConfig resolved (a `???` value left unset is an error naming its key),
    a mapping of plain values as it is."""
    if isinstance(cfg, DictConfig):
        return to_dict(cfg, "")
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"a config is a mapping of groups (data, model, optimizer, ...), not {type(cfg).__name__}.")
    return dict(cfg)


def _section(cfg: Any, key: str, default: Any = None) -> dict[str, Any]:
    """One group of a config (`data`, `model`, ...) as a plain dict; {} (or `default`) where the config has none."""
    if isinstance(cfg, DictConfig):
        node = cfg.get(key)
        return to_dict(node, key) if isinstance(node, DictConfig) else dict(default or {})
    node = cfg.get(key)
    if node is None:
        return dict(default or {})
    if not isinstance(node, Mapping):
        raise ConfigError(f"{key}={node!r} is not a group of settings: give {key} as keys, e.g. {key}.name=...")
    return dict(node)


def to_dict(node: DictConfig, key: str) -> dict[str, Any]:
    """A config group as a plain dict; a `???` value left unset becomes an error naming its key."""
    try:
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except MissingMandatoryValue as exc:
        # full_key is the path from the config's root (data.train_csv) when the node has a parent, else its own key
        full = str(exc.full_key or "") if "." in str(exc.full_key or "") or not key else \
            ".".join(k for k in (key, str(exc.full_key or exc.key or "")) if k)
        full = full or "a key"
        raise ConfigError(f"{full} is required and has no value: set it on the command line, e.g. {full}=PATH.") from None


def _shown(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def build_settings(cfg: Any) -> TrainerSettings:
    values = _section(cfg, "trainer")
    try:
        return call_with(TrainerSettings, values, "trainer", "the trainer")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def build_data(cfg: Any, splits: tuple[str, ...] = ("train", "val", "test")) -> DataSplits:
    """The data the config names; `splits` limits what is read (eval reads only the split it evaluates)."""
    values = _section(cfg, "data")
    entry = registry.DATASETS.get(values.get("name"))
    reader = entry.load()
    kwargs = {k: v for k, v in values.items() if k not in LOADER_KEYS}
    if "seed" in inspect.signature(reader).parameters:
        kwargs.setdefault("seed", _seed(cfg))
    if "splits" in kwargs:  # the reader's own argument, chosen by the command, never by a config
        raise ConfigError("data.splits is not a setting of a dataset: remove it (trainkit reads the splits a command "
                          "needs).")
    data = call_with(reader, kwargs, "data", f"data={entry.name}", given={"splits": splits})
    return _plugin_data(data, entry) if entry.plugin else data


def _plugin_data(data: Any, entry: registry.Entry) -> DataSplits:
    """What a plugin's dataset returned, as the loader needs it: tensors (numpy arrays are taken as they are), each
    split's samples of the shape its DataMeta says."""
    said = f"data={entry.name} (registered by {entry.origin} at {entry.where})"
    if not isinstance(data, DataSplits) or not isinstance(data.meta, DataMeta):
        raise ConfigError(f"{said} returned {type(data).__name__}; a dataset returns trainkit.data.base.DataSplits"
                          f"(train, val, test, meta) with a DataMeta as its meta.")
    meta = data.meta
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        if split is None:
            continue
        x, y = torch.as_tensor(split.x), None if split.y is None else torch.as_tensor(split.y)
        if x.is_floating_point():
            x = x.float()
        if y is not None:
            y = y.long() if meta.kind == "classification" else y.float()
        if tuple(x.shape[1:]) != tuple(meta.in_shape) or (y is not None and len(y) != len(x)):
            raise ConfigError(f"{said}: its {name} split holds samples of shape {list(x.shape[1:])} and "
                              f"{len(x) if y is None else len(y)} labels for {len(x)} samples, but its DataMeta says "
                              f"in_shape={list(meta.in_shape)}. Make the two agree (x: N×{'×'.join(map(str, meta.in_shape))}"
                              f", one label per sample).")
        setattr(data, name, Split(x, y))
    return data


def build_loaders(cfg: Any, data: DataSplits, device: torch.device,
                  settings: TrainerSettings) -> dict[str, BatchLoader]:
    values = _section(cfg, "data")
    size = batch_size(values)
    augment = values.get("augment")
    augment = call_with(Augment, augment, "data.augment", "data.augment") if augment else None
    train, val, shuffle = data.train, data.val, True
    if settings.overfit_batches:  # memorise the same few batches: train on them, validate on them
        keep = slice(0, settings.overfit_batches * size)
        train = val = Split(data.train.x[keep], data.train.y[keep])
        shuffle, augment = False, None
    loaders = {
        "train": BatchLoader(train, data.meta, size, device, shuffle=shuffle, seed=_seed(cfg), augment=augment,
                             on_device=bool(values.get("on_device", True)), shard=_shard()),
        "val": build_eval_loader(cfg, val, data.meta, device, settings),
    }
    if data.test is not None and data.test.y is not None:
        loaders["test"] = build_eval_loader(cfg, data.test, data.meta, device, settings)
    return loaders


def build_eval_loader(cfg: Any, split: Split, meta: DataMeta, device: torch.device,
                      settings: TrainerSettings) -> BatchLoader:
    """Unshuffled batches of a split (validation, test, eval), trainer.eval_batch_size at a time."""
    values = _section(cfg, "data")
    size = settings.eval_batch_size or 4 * batch_size(values)  # no gradients to hold
    return BatchLoader(split, meta, size, device, on_device=bool(values.get("on_device", True)), shard=_shard())


def _shard() -> tuple[int, int]:
    return (distributed.rank(), distributed.world_size()) if distributed.active() else (0, 1)


def build_task(cfg: Any, meta: DataMeta, examples: Split | None = None, restoring: bool = False) -> Task:
    """The model, sized from the data's metadata, inside the task that says how it learns and what it does
    after training. `examples`: a few real samples as stored (a GAN draws its point clouds over them).
    `restoring`: the weights come from a checkpoint (a model's pretrained weights are not fetched)."""
    values = _section(cfg, "model")
    entry = registry.MODELS.get(values.pop("name", None))
    if not entry.plugin:
        check_model_values(values)
    task_values = _section(cfg, "task")
    task_name = task_values.pop("name", "auto")
    if task_name == "auto":  # the model's own task (a GAN), else the one that learns the data's kind
        task_name = entry.task or meta.kind
        if task_name not in registry.TASKS:
            raise ConfigError(f"data={meta.name} is a {meta.kind!r} data set, and no task learns that: choose one with "
                              f"task=NAME. {registry.TASKS.choices()}")
    task_entry = registry.TASKS.get(task_name)
    task_cls = task_entry.load()
    net = _model(entry, values, meta, task_cls, restoring)
    given = {"examples": examples} if "examples" in inspect.signature(task_cls).parameters else {}
    return call_with(partial(task_cls, net, meta), task_values, "task", f"task={task_name}", given)


def _model(entry: registry.Entry, values: dict[str, Any], meta: DataMeta, task_cls: Any, restoring: bool) -> Any:
    """The model, once it is known to fit in memory and to take the data's samples; its own refusals (a value it has
    no use for, a shape that does not fit the data) become an error naming the key. `restoring`: a checkpoint's
    weights replace the model's own, so a model that takes `from_checkpoint` fetches no pretrained weights."""
    factory = entry.load()
    params = inspect.signature(factory).parameters
    offered = {"in_shape": tuple(meta.in_shape), "num_outputs": meta.num_outputs, "meta": meta,
               "from_checkpoint": restoring}
    given = {k: v for k, v in offered.items() if k in params}
    try:
        _fits_in_memory(factory, values, given, entry.name, getattr(task_cls, "io_shapes", None), meta)
        return call_with(factory, values, "model", f"model={entry.name}", given)
    except ValueError as exc:
        raise ConfigError(f"model={entry.name} does not fit data={meta.name}: {exc}") from None


def check_model_values(values: dict[str, Any]) -> None:
    """Sizes (widths, channels, latent_dim) are whole numbers of at least 1, a dropout is in [0, 1): a zero-width
    layer or a dropout of 1 builds a network with a constant output that trains to nothing."""
    for key, value in values.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        sizes = value if isinstance(value, list) else [value] if number and "dropout" not in key else []
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes):
            what = "whole numbers" if isinstance(value, list) else "a whole number"
            raise ConfigError(f"model.{key}={value} must be {what} of at least 1 (a width or size of 0 builds a "
                              f"layer with nothing in it).")
        if "dropout" in key and not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise ConfigError(f"model.{key}={value} must be a probability in [0, 1), e.g. 0.1 (0: no dropout).")


def _fits_in_memory(factory: Any, kwargs: dict[str, Any], given: dict[str, Any], name: str, io_shapes: Any,
                    meta: DataMeta) -> None:
    """Refuse, before allocating, a model whose weights, gradients and optimizer state cannot fit in memory, or that
    does not take the data's samples to the task's outputs (one forward pass on the meta device: no memory, no
    time)."""
    with torch.device("meta"):
        probe = call_with(factory, kwargs, "model", f"model={name}", given)
        shapes = io_shapes(meta) if io_shapes is not None and isinstance(probe, torch.nn.Module) else None
        if shapes is not None:
            _check_shapes(probe, name, meta, *shapes)
    params = sum(p.numel() for p in probe.parameters())
    needed = params * 4 * 4  # float32 weights, gradients and two moments (Adam)
    free = available_memory()
    if needed > free:
        gib = 2**30
        raise ConfigError(f"model={name} with these sizes has {params:,} parameters: about {needed / gib:.1f} GiB for "
                          f"its weights, gradients and optimizer state, and this machine has {free / gib:.1f} GiB "
                          f"free. Make model.* smaller (its widths and channels).")


def _check_shapes(probe: torch.nn.Module, name: str, meta: DataMeta, in_shape: tuple[int, ...],
                  out_shape: tuple[int, ...]) -> None:
    """A batch of two samples of the data's shape through the model on the meta device: its output must be what
    the task reads (e.g. one logit per class)."""
    try:
        out = probe(torch.empty(2, *in_shape))
    except NotImplementedError:  # an operation the meta device does not know (a RuntimeError too): training tells
        return
    except (RuntimeError, ValueError, IndexError) as exc:  # a layer that does not take what the one before gives
        said = " ".join(str(exc).split())[:300]
        raise ConfigError(f"model={name} does not take data={meta.name}'s samples (shape {list(in_shape)}): a forward "
                          f"pass of a batch of that shape fails with {type(exc).__name__}: {said}. Size the model "
                          f"from in_shape (model.* keys), or give the data another shape.") from None
    got = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
    if got != tuple(out_shape):
        raise ConfigError(f"model={name} gives outputs of shape {['batch', *got] if got is not None else type(out).__name__}"
                          f" for data={meta.name}'s samples (shape {list(in_shape)}), and the task needs "
                          f"{['batch', *out_shape]} ({meta.num_outputs} {'classes' if meta.kind == 'classification' else 'outputs'}). "
                          f"Size its last layer from num_outputs.")


def available_memory() -> int:
    """Bytes of memory free for a new allocation on this machine (its RAM: GPU runs copy through it too)."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def build_optimization(cfg: Any, task: Task, settings: TrainerSettings, device: torch.device,
                       steps_per_epoch: int) -> Optimization:
    values = _section(cfg, "optimizer")
    name = registry.OPTIMIZERS.get(values.pop("name", None)).name
    optimizers = {group: _optimizer(name, params, values) for group, params in task.param_groups().items()}
    updates_per_epoch = max(1, steps_per_epoch // settings.accumulate_grad_batches)
    schedulers = {k: build_scheduler(cfg, o, settings, updates_per_epoch, task.monitor_mode)
                  for k, o in optimizers.items()}
    ema = None
    if settings.ema_decay is not None:
        from trainkit.engine.ema import EMA

        try:
            ema = EMA(task.modules(), settings.ema_decay)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return Optimization(
        optimizers, Precision(settings.precision, device),
        schedulers={k: s for k, s in schedulers.items() if s is not None}, grad_clip=settings.grad_clip,
        skip_nonfinite=settings.on_nan == "skip", accumulate=settings.accumulate_grad_batches,
        monitor=task.monitor, ema=ema,
    )


def _optimizer(name: str, params: Any, values: dict[str, Any]) -> torch.optim.Optimizer:
    """torch's optimizer, its own argument checks turned into an error that names the optimizer.* key."""
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"optimizer.{key}={value} is not a finite number; give optimizer={name} a real value.")
    maker = registry.OPTIMIZERS.get(name).load()
    try:
        return call_with(maker, values, "optimizer", f"optimizer={name}", {"params": params})
    except (ValueError, TypeError, RuntimeError, LookupError) as exc:  # what torch's checks raise (betas=[]: Index)
        said = " ".join(str(exc).split())
        keys = [f"optimizer.{k}={v}" for k, v in values.items() if k.split("_")[0] in said.lower()
                or (str(v) in said and not isinstance(v, bool))]
        where = f" ({', '.join(keys)})" if keys else f" (its settings: {values})"
        raise ConfigError(f"optimizer={name} refuses its settings{where}: {getattr(maker, '__qualname__', name)} "
                          f"says {said!r}. Change that optimizer.* value.") from None


def preflight(cfg: Any) -> None:
    """Every value of a training config that can be checked without data, checked before anything is written:
    the trainer's settings, the seed, the batch size, each group's keys, and the optimizer and scheduler
    through torch's own argument checks on a stand-in parameter."""
    settings = build_settings(cfg)
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        shown = "null" if seed is None else repr(seed)
        raise ConfigError(f"seed={shown} must be a whole number from 0 to 2**32 - 1, e.g. seed=0.")
    data = _section(cfg, "data")
    batch_size(data)
    registry.DATASETS.get(data.get("name"))
    if data.get("augment"):
        call_with(Augment, data["augment"], "data.augment", "data.augment")
    model = _section(cfg, "model")
    if not registry.MODELS.get(model.pop("name", None)).plugin:
        check_model_values(model)
    task = _section(cfg, "task").get("name", "auto")
    if task != "auto":
        registry.TASKS.get(task)
    values = _section(cfg, "optimizer")
    opt_name = registry.OPTIMIZERS.get(values.pop("name", None)).name
    stand_in = _optimizer(opt_name, [torch.nn.Parameter(torch.zeros(1))], values)
    build_scheduler(cfg, stand_in, settings, 1, "min")


def component_names(cfg: Any) -> dict[str, Any]:
    """{kind: name} of the components a config chooses (registry kinds)."""
    group = lambda key: _section(cfg, key).get("name")  # noqa: E731
    return {"model": group("model"), "dataset": group("data"), "task": group("task"),
            "optimizer": group("optimizer"), "scheduler": group("scheduler")}


def plugin_origins(cfg: Any) -> dict[str, str]:
    """{kind: plugin module} for the components of `cfg` that plugins registered: a checkpoint keeps it, to say what to
    load when a later command lacks it."""
    return registry.origins(component_names(cfg))


def batch_size(data: dict[str, Any]) -> int:
    """data.batch_size: a whole number of samples, at least 1."""
    value = data.get("batch_size", 64)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"data.batch_size={value!r} must be a whole number of samples, at least 1 "
                          f"(e.g. data.batch_size=64).")
    return value


def build_scheduler(cfg: Any, optimizer: torch.optim.Optimizer, settings: TrainerSettings, updates_per_epoch: int,
                    monitor_mode: str) -> Any:
    """The scheduler the config names, stepped after every optimizer update (ReduceLROnPlateau: after every epoch),
    or None; `warmup_epochs` ramps the learning rate up linearly first. Every scheduler is built the same way: the
    `scheduler.*` keys, and what its signature asks of `steps_per_epoch`, `total_steps` (updates after the warm-up)
    and `monitor_mode`. trainkit's own count in epochs (engine/schedulers.py); torch's classes, named by their
    class name (scheduler.name=ExponentialLR), and plugins' count in optimizer updates, as torch does."""
    values = _section(cfg, "scheduler", {"name": "none"})
    entry = registry.SCHEDULERS.get(values.pop("name", "none"))
    name = entry.name
    epochs = values.pop("warmup_epochs", 0.0)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not 0 <= epochs <= settings.max_epochs:
        raise ConfigError(f"scheduler.warmup_epochs={_shown(epochs)} must be a number of epochs from 0 to "
                          f"trainer.max_epochs ({settings.max_epochs}), e.g. 1 or 0.5.")
    warmup = round(epochs * updates_per_epoch)
    total = settings.max_epochs * updates_per_epoch
    if warmup and name in ("onecycle", "plateau", "OneCycleLR", "ReduceLROnPlateau"):
        raise ConfigError(f"scheduler={name} has no scheduler.warmup_epochs: onecycle warms up by itself "
                          f"(scheduler.pct_start); plateau acts on epochs. Remove scheduler.warmup_epochs.")
    target = entry.load()
    params = inspect.signature(target).parameters
    offered = {"optimizer": optimizer, "total_steps": total - warmup, "steps_per_epoch": updates_per_epoch,
               "monitor_mode": monitor_mode}
    given = {k: v for k, v in offered.items() if k in params and k not in values}
    try:
        main = call_with(target, values, "scheduler", f"scheduler={name}", given)
    except (TypeError, ValueError, ArithmeticError) as exc:  # torch's own checks of each argument
        said = " ".join(str(exc).split())
        settings_now = ", ".join(f"scheduler.{k}={_shown(v)}" for k, v in values.items())
        raise ConfigError(f"scheduler={name} refuses its settings ({settings_now}): {said}. Change that "
                          f"scheduler.* value.") from None
    if not warmup:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    if main is None:
        return ramp
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


@dataclass
class Built:
    """Everything a command needs, built from one config."""

    settings: TrainerSettings
    device: torch.device
    data: DataSplits | None  # None: built from a checkpoint alone
    task: Task
    loaders: dict[str, BatchLoader]


def build_runtime(cfg: Any) -> tuple[TrainerSettings, torch.device]:
    """The trainer's settings and the device, with the process-wide switches they set."""
    settings = build_settings(cfg)
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    try:
        device = resolve_device(settings.device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if settings.matmul_precision:
        torch.set_float32_matmul_precision(settings.matmul_precision)
    return settings, device


def build_run(cfg: Any, restoring: bool = False) -> Built:
    """What `trainkit train` trains: data, loaders and the task, on the device, with the speed switches.
    `restoring`: a resumed run, whose checkpoint holds the weights (nothing pretrained is fetched)."""
    settings, device = build_runtime(cfg)
    data = build_data(cfg)
    task = build_task(cfg, data.meta, examples(data.val), restoring=restoring)
    loaders = build_loaders(cfg, data, device, settings)
    place(task, loaders.values(), settings, device)
    return Built(settings, device, data, task, loaders)


def examples(split: Split, rows: int = 512, max_bytes: int = 256 * 1024) -> Split:
    """The first few samples of a split as stored, small enough to travel in every checkpoint."""
    per_row = max(1, split.x[:1].numel() * split.x.element_size())
    n = max(1, min(rows, max_bytes // per_row))
    return Split(split.x[:n].clone(), None if split.y is None else split.y[:n].clone())


def place(task: Task, loaders: Any, settings: TrainerSettings, device: torch.device) -> None:
    """Modules and batches onto the device, in the memory format and compiled as the speed switches say
    (each measured in benchmarks/README.md)."""
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    for loader in loaders:
        loader.memory_format = memory_format  # image batches leave the loader in the weights' layout
    for module in task.modules().values():
        module.to(device, memory_format=memory_format)  # only 4-D weights (convs) change layout
        if settings.compile:
            # In place, so state_dict keys and checkpoints stay those of the plain module. The children too: a
            # task may call parts of a module (a GAN's generator); inside a compiled parent they are inlined.
            for part in (module, *module.children()):
                part.compile()


def _seed(cfg: Any) -> int:
    seed = cfg.get("seed", 0)
    return 0 if seed is None else seed


def build_trainer(cfg: Any, run_dir: str | Path, *, resume: str | Path | None = None, callbacks: Any = (),
                  stop: Any = None, console: Any = None) -> Any:
    """A ready Trainer for a whole training config: checked, seeded, its data read and checked, its task built
    and placed on the device (wrapped for data-parallel training where the process group has several ranks), its
    optimization and trackers made. `resume`: a checkpoint of this run to continue (its weights replace any
    pretrained ones; its tracker runs continue)."""
    from trainkit.engine import checkpoint
    from trainkit.engine.device import set_deterministic
    from trainkit.engine.loop import num_batches
    from trainkit.engine.rng import seed_everything
    from trainkit.trainer import Recipe, Trainer

    cfg = plain(cfg)
    preflight(cfg)
    seed_everything(_seed(cfg))
    saved = checkpoint.Saved.read(resume) if resume is not None else None
    built = build_run(cfg, restoring=saved is not None)
    data = training_data(cfg, built)
    set_deterministic(built.settings.deterministic)
    built.task.distribute(lambda module: distributed.wrap(module, built.device))
    steps_per_epoch = num_batches(built.loaders["train"], built.settings.limit_train_batches)
    opt = build_optimization(cfg, built.task, built.settings, built.device, steps_per_epoch)
    plugins = plugin_origins(cfg)
    chosen = next((e for e in registry.TASKS.entries.values() if e.plugin and e.target is type(built.task)), None)
    if chosen is not None:  # task=auto picked a plugin's task: a later command must load its module too
        plugins.setdefault("task", chosen.origin)
    recipe = Recipe(OmegaConf.to_yaml(OmegaConf.create(cfg), resolve=True), plugins)
    trackers = build_trackers(cfg, Path(run_dir), built.settings, saved) if distributed.is_main() else None
    try:
        return Trainer(built.task, data, opt, built.settings, run_dir, callbacks=callbacks, trackers=trackers,
                       recipe=recipe, resume=saved, stop=stop, console=console)
    except BaseException:
        if trackers is not None:
            trackers.end("failed")
        raise


def training_data(cfg: Any, built: Built) -> Any:
    """The Trainer's data: the loaders, a few stored samples for checkpoints, and the data check. What `trainkit data
    check` would call fatal for training (a class missing from a split) is an error unless
    data.allow_missing_classes=true; copies of test samples in train are a warning, kept in summary.json."""
    from trainkit.data.check import training_problems
    from trainkit.trainer import TrainingData

    data = built.data
    fatal, warnings = training_problems(data)
    if fatal and not _section(cfg, "data").get("allow_missing_classes", False):
        raise DataError(f"data={data.meta.name}: {' '.join(fatal)} Fix the data, or set data.allow_missing_classes=true "
                        f"if that is what you mean.")
    loaders = built.loaders
    return TrainingData(data.meta, loaders["train"], loaders["val"], loaders.get("test"), examples(data.val),
                        warnings + fatal)


def build_trackers(cfg: Any, run_dir: Path, settings: TrainerSettings, saved: Any = None) -> Any:
    """The trackers `logger=` chooses (default: tensorboard; trainer.tensorboard=false leaves it out), given the
    flattened config as params; a resumed run continues the tracker runs whose ids its checkpoint carries."""
    from trainkit.logging.trackers import TrackerRun, open_trackers
    from trainkit.rundirs.read import overrides_of
    from trainkit.rundirs.resume import flatten

    chosen = _section(cfg, "logger", {"tensorboard": {}})
    if not settings.tensorboard:
        chosen.pop("tensorboard", None)
    if not chosen:
        return None
    sweep = run_dir.parent.name if (run_dir.parent / "multirun.yaml").is_file() else None
    params = {k: v for k, v in flatten(cfg).items() if k != "resume"}
    overrides = [o for o in overrides_of(run_dir) if not o.startswith(("resume=", "hydra."))]
    payload = saved.payload if saved is not None else {}
    run = TrackerRun(run_dir, params, overrides, sweep, resume_step=payload["fit"]["step"] if saved else None)
    return open_trackers(chosen, run, payload.get("trackers"))
