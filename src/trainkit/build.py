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
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from trainkit import registry, storage
from trainkit.data.base import DataError, DataMeta, DataSplits, Split
from trainkit.data.loader import Augment, BatchLoader
from trainkit.engine import distributed
from trainkit.engine.device import resolve_device
from trainkit.engine.optimization import Optimization, Precision
from trainkit.engine.settings import TrainerSettings
from trainkit.errors import ConfigError, UserError
from trainkit.registry import PluginError, call_with
from trainkit.tasks.base import Task

# data.* keys for the batch loader and the trainer, not the reader
LOADER_KEYS = {"name", *registry.DATASET_KEYS}
# What the loop calls on every task, and what it reads: a plugin's task without one is refused before training.
TASK_METHODS = ("modules", "param_groups", "distribute", "train_step", "eval_step", "epoch_images")


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


def guarded(entry: registry.Entry, doing: str, fn: Any, *args: Any, fix: str = "", **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, where `fn` runs a plugin's code: what the plugin raises (an assert, an AttributeError, a
    sys.exit) becomes a PluginError naming the component, where it is registered and the line that raised. trainkit's
    own errors (a config key the component does not have) pass as they are; trainkit's own components are trusted."""
    if not entry.plugin:
        return fn(*args, **kwargs)
    try:
        return fn(*args, **kwargs)
    except UserError:
        raise
    except (Exception, SystemExit) as exc:
        raise registry.plugin_fault(entry, doing, exc, fix) from None


def build_settings(cfg: Any) -> TrainerSettings:
    values = _section(cfg, "trainer")
    try:
        return call_with(TrainerSettings, values, "trainer", "the trainer")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def build_data(cfg: Any, splits: tuple[str, ...] = ("train", "val", "test")) -> DataSplits:
    """The data the config names; `splits` limits what is read (eval reads only the split it evaluates)."""
    entry, kwargs, key = _data_call(cfg, splits)
    if _READ.get("key") == key:  # what preflight read and checked a moment ago: taken once, as it was left
        from trainkit.engine.rng import set_rng_state

        read = _READ.copy()
        _READ.clear()
        set_rng_state(read["rng"])
        return read["data"]
    data = guarded(entry, "reading its data", call_with, entry.load(), kwargs, "data", f"data={entry.name}",
                   given={"splits": splits})
    return plugin_data(data, entry) if entry.plugin else data


def _data_call(cfg: Any, splits: tuple[str, ...]) -> tuple[registry.Entry, dict[str, Any], tuple[Any, ...]]:
    """The dataset's entry, the keyword arguments its function is called with, and what identifies that read."""
    values = _section(cfg, "data")
    entry = registry.DATASETS.get(values.get("name"))
    # A file or folder in object storage (data.root=s3://...): read from a local copy, fetched once and reused while
    # the stored objects are unchanged; the reader and its sample store see a local path, as always.
    kwargs = {k: str(storage.fetch(v)) if storage.is_url(v) else v for k, v in values.items() if k not in LOADER_KEYS}
    if "seed" in _params(entry.load()):
        kwargs.setdefault("seed", _seed(cfg))
    if "splits" in kwargs:  # the reader's own argument, chosen by the command, never by a config
        raise ConfigError("data.splits is not a setting of a dataset: remove it (trainkit reads the splits a command "
                          "needs).")
    return entry, kwargs, (entry.name, id(entry.target), repr(sorted(kwargs.items())), tuple(splits))


_READ: dict[str, Any] = {}  # the data preflight read for the build that follows it: key, data, RNG state after it


def plugin_data(data: Any, entry: registry.Entry) -> DataSplits:
    """What a plugin's dataset returned, checked and as the loader needs it: a DataMeta that can size a model, and
    each split's samples (tensors or numpy arrays) of the shape it says, with one finite target per sample (a class
    index in 0..num_outputs-1 for classification), none of them empty."""
    from trainkit.data.base import check_meta, check_split

    said = entry.described
    if not isinstance(data, DataSplits) or not isinstance(data.meta, DataMeta):
        raise PluginError(f"{said} returned {type(data).__name__}; a dataset returns trainkit.data.base.DataSplits"
                          f"(train, val, test, meta) with a DataMeta as its meta.")
    try:
        check_meta(data.meta)
        for name in ("train", "val", "test"):
            split = getattr(data, name)
            if split is not None:
                setattr(data, name, check_split(split, name, data.meta))
    except DataError as err:
        raise DataError(f"{said}: {err}") from None
    return data


def build_loaders(cfg: Any, data: DataSplits, device: torch.device,
                  settings: TrainerSettings) -> dict[str, BatchLoader]:
    values = _section(cfg, "data")
    size = batch_size(values)
    augment = build_augment(values.get("augment"), data.meta)
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


def build_augment(values: Any, meta: DataMeta | None = None) -> Augment | None:
    """data.augment's crop and flip, or None where both are off; they crop and flip images (C×H×W samples)."""
    if values is None or values == {}:
        return None
    if not isinstance(values, Mapping):
        raise ConfigError(f"data.augment={_shown(values)} is not a group of settings: give data.augment.hflip=true, "
                          f"data.augment.crop_padding=4, or data.augment=null.")
    augment = call_with(Augment, dict(values), "data.augment", "data.augment")
    if isinstance(augment.crop_padding, bool) or not isinstance(augment.crop_padding, int) or augment.crop_padding < 0:
        raise ConfigError(f"data.augment.crop_padding={_shown(augment.crop_padding)} must be a whole number of pixels, "
                          f"0 or more (0: no crop).")
    if not augment.crop_padding and not augment.hflip:
        return None
    if meta is not None and len(meta.in_shape) != 3:
        raise ConfigError(f"data.augment crops and flips images, and data={meta.name} has samples of shape "
                          f"{list(meta.in_shape)}, not C×H×W images: set data.augment.hflip=false and "
                          f"data.augment.crop_padding=0.")
    return augment


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
    task_values.pop("name", None)
    task_entry = task_of(cfg, entry, meta)
    net = _model(entry, values, meta, task_entry, restoring)
    return make_task(task_entry, net, meta, task_values, examples)


def task_of(cfg: Any, model: registry.Entry, meta: DataMeta) -> registry.Entry:
    """The task the config names; task=auto: the model's own task (a GAN), else the one that learns the data's kind."""
    task_name = _section(cfg, "task").get("name", "auto")
    if task_name == "auto":
        task_name = model.task or meta.kind
        if task_name not in registry.TASKS:
            raise ConfigError(f"data={meta.name} is a {meta.kind!r} data set, and no task learns that: choose one with "
                              f"task=NAME. {registry.TASKS.choices()}")
    return registry.TASKS.get(task_name)


def make_task(entry: registry.Entry, net: Any, meta: DataMeta, values: dict[str, Any], examples: Split | None) -> Task:
    """The task class of `entry` around `net`, with the `task.*` keys; a plugin's task checked to have what the loop
    calls (the Task protocol's training half), so a missing method is said now, not in the middle of an epoch."""
    task_cls = entry.load()
    try:
        takes_examples = "examples" in inspect.signature(task_cls).parameters
    except (TypeError, ValueError):
        takes_examples = False
    given = {"examples": examples} if takes_examples else {}
    task = guarded(entry, "being constructed", call_with, partial(task_cls, net, meta), values, "task", entry.chosen,
                   given)
    if entry.plugin:
        _check_task(task, entry)
    return task


def _check_task(task: Any, entry: registry.Entry) -> None:
    missing = [m for m in TASK_METHODS if not callable(getattr(task, m, None))]
    if missing:
        raise PluginError(f"{entry.described} made a {type(task).__name__} without {', '.join(missing)}: a task has "
                          f"the methods of trainkit.tasks.base.Task. Subclass trainkit.tasks.base.SingleNetTask (one "
                          f"network) or write them (docs/extending.md, 'The task contract').")
    if not isinstance(getattr(task, "monitor", None), str) or getattr(task, "monitor_mode", None) not in ("min", "max"):
        monitor, mode = getattr(task, "monitor", None), getattr(task, "monitor_mode", None)
        raise PluginError(f"{entry.described}: its monitor={monitor!r} and monitor_mode={mode!r} should be the "
                          f"validation metric that picks the best checkpoint (e.g. \"val/acc\") and \"max\" or "
                          f"\"min\".")
    modules = guarded(entry, "listing its modules (modules())", task.modules)
    groups = guarded(entry, "listing its parameters (param_groups())", task.param_groups)
    if not isinstance(modules, Mapping) or not modules or not all(isinstance(m, torch.nn.Module)
                                                                  for m in modules.values()):
        raise PluginError(f"{entry.described}: its modules() returned {registry.brief(modules)}; it returns a dict of "
                          f"the nn.Modules to train, move and checkpoint, e.g. {{\"net\": self.net}}.")
    if not isinstance(groups, Mapping) or not groups:
        raise PluginError(f"{entry.described}: its param_groups() returned {registry.brief(groups)}; it returns a dict "
                          f"of optimizer name to parameters, e.g. {{\"main\": list(self.net.parameters())}}.")


def _model(entry: registry.Entry, values: dict[str, Any], meta: DataMeta, task: registry.Entry,
           restoring: bool) -> Any:
    """The model, once it is known to fit in memory and to take the data's samples; its own refusals (a value it has
    no use for, a shape that does not fit the data) become an error naming the key. `restoring`: a checkpoint's
    weights replace the model's own, so a model that takes `from_checkpoint` fetches no pretrained weights."""
    factory = entry.load()
    given = _model_given(factory, meta, restoring)
    shapes = _io_shapes(task, meta)
    try:
        checked = probe_model(entry, values, given, meta, task, shapes) is not None
        net = guarded(entry, "building the model", call_with, factory, values, "model", entry.chosen, given)
    except ValueError as exc:
        raise _does_not_fit(entry, meta, exc) from None
    _check_module(net, entry)
    if shapes is not None and not checked:  # the meta device could not tell: one small batch on the CPU can
        with torch.no_grad(), _evaluating(net):
            _check_shapes(net, entry, meta, task, *shapes, device=torch.device("cpu"))
    return net


def _model_given(factory: Any, meta: DataMeta, restoring: bool) -> dict[str, Any]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    offered = {"in_shape": tuple(meta.in_shape), "num_outputs": meta.num_outputs, "meta": meta,
               "from_checkpoint": restoring}
    return {k: v for k, v in offered.items() if k in params}


def _io_shapes(task: registry.Entry, meta: DataMeta) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    io_shapes = getattr(task.load(), "io_shapes", None)
    return None if io_shapes is None else guarded(task, "giving its io_shapes", io_shapes, meta)


class _evaluating:
    """The module in eval mode for a check's forward pass (no batch statistics change), then as it was."""

    def __init__(self, module: Any) -> None:
        self.module, self.was = module, getattr(module, "training", False)

    def __enter__(self) -> None:
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.was)


def _check_module(net: Any, entry: registry.Entry) -> None:
    if not isinstance(net, torch.nn.Module):
        raise PluginError(f"{entry.described} made {registry.brief(net)}, not a torch.nn.Module: a "
                          f"model is an nn.Module (a class that subclasses it, or a function that returns one).")


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


def probe_model(entry: registry.Entry, values: dict[str, Any], given: dict[str, Any], meta: DataMeta,
                task: registry.Entry, shapes: Any) -> Any:
    """Refuse, before allocating, a model whose weights, gradients and optimizer state cannot fit in memory, or that
    does not take the data's samples to the task's outputs (one forward pass on the meta device: no memory, no
    time). Returns the meta-device model, or None where the meta device cannot tell (a plugin's model that reads
    values while it is built, or runs an operation the meta device lacks): then the real one is checked."""
    factory = entry.load()
    try:
        with torch.device("meta"):
            probe = call_with(factory, values, "model", entry.chosen, given)
    except UserError:
        raise
    except ValueError as exc:  # a model's refusal of its sizes or of the data
        raise _does_not_fit(entry, meta, exc) from None
    except (Exception, SystemExit) as exc:
        if not entry.plugin:
            raise
        if _meta_only(exc):
            return None
        raise registry.plugin_fault(entry, "building the model", exc) from None
    _check_module(probe, entry)
    if shapes is not None:
        with torch.device("meta"):
            if not _check_shapes(probe, entry, meta, task, *shapes):
                return None
    params = sum(p.numel() for p in probe.parameters())
    needed = params * 4 * 4  # float32 weights, gradients and two moments (Adam)
    free = available_memory()
    if needed > free:
        gib = 2**30
        raise ConfigError(f"model={entry.name} with these sizes has {params:,} parameters: about "
                          f"{needed / gib:.1f} GiB for its weights, gradients and optimizer state, and this machine "
                          f"has {free / gib:.1f} GiB free. Make model.* smaller (its widths and channels).")
    return probe


def _does_not_fit(entry: registry.Entry, meta: DataMeta, exc: ValueError) -> ConfigError:
    if not entry.plugin:
        return ConfigError(f"model={entry.name} does not fit data={meta.name}: {exc}")
    return ConfigError(f"{entry.described} does not fit data={meta.name}: {registry.raised_at(exc, entry)}: "
                       f"ValueError: {' '.join(str(exc).split())[:300]}. Size it from in_shape and num_outputs (its "
                       f"model.* keys), or fix that line.")


def _meta_only(exc: BaseException) -> bool:
    """An error the meta device causes (no values to read, an operation it lacks), not the model's own."""
    return isinstance(exc, NotImplementedError) or (isinstance(exc, RuntimeError) and "meta" in str(exc).lower())


def _check_shapes(probe: torch.nn.Module, entry: registry.Entry, meta: DataMeta, task: registry.Entry,
                  in_shape: tuple[int, ...], out_shape: tuple[int, ...], device: torch.device | None = None) -> bool:
    """A batch of two samples of the data's shape through the model (on the meta device unless `device`): its output
    must be floats of the shape the task reads (e.g. one logit per class). False where the meta device cannot tell."""
    name = entry.name
    try:
        out = probe(torch.zeros(2, *in_shape, device=device))
    except (Exception, SystemExit) as exc:
        if device is None and _meta_only(exc):  # an operation the meta device does not know: the real one will tell
            return False
        if entry.plugin and not isinstance(exc, (RuntimeError, ValueError, IndexError)) or isinstance(exc, SystemExit):
            raise registry.plugin_fault(entry, f"running a batch of data={meta.name}'s samples (shape "
                                               f"{list(in_shape)})", exc) from None
        if not isinstance(exc, (RuntimeError, ValueError, IndexError)):
            raise
        said = " ".join(str(exc).split())[:300]  # a layer that does not take what the one before gives
        at = f" ({registry.raised_at(exc, entry)})" if entry.plugin else ""
        raise ConfigError(f"model={name} does not take data={meta.name}'s samples (shape {list(in_shape)}): a forward "
                          f"pass of a batch of that shape fails{at} with {type(exc).__name__}: {said}. Size the model "
                          f"from in_shape (model.* keys), or give the data another shape.") from None
    needs = (f"the task needs {['batch', *out_shape]} (task={task.name}; data={meta.name} has "
             f"num_outputs={meta.num_outputs})")
    model = entry.described if entry.plugin else f"model={name}"
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{model} returns {type(out).__name__}, not a tensor, for a batch of "
                          f"data={meta.name}'s samples, and {needs}. Return one tensor from forward().")
    if not out.is_floating_point():
        raise ConfigError(f"{model} returns {str(out.dtype).removeprefix('torch.')} outputs, and {needs} as "
                          f"floats (logits, values) that a loss can differentiate. Return the last layer's output "
                          f"as it is (no .long(), .argmax() or .round()).")
    got = tuple(out.shape[1:])
    if got != tuple(out_shape):
        raise ConfigError(f"{model} gives outputs of shape {['batch', *got]} for data={meta.name}'s samples "
                          f"(shape {list(in_shape)}), and {needs}. Size its last layer from num_outputs.")
    return True


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
    optimizers = {}
    for group, params in task.param_groups().items():
        params = list(params)
        if not params:
            chosen = registry.MODELS.entries.get(_section(cfg, "model").get("name"))
            model = chosen.described if chosen is not None and chosen.plugin else "its model"
            raise ConfigError(f"the task's {group!r} parameters are empty: {model} has nothing to train (no "
                              f"parameters, or all of them frozen). Give the model trainable layers.")
        optimizers[group] = _optimizer(name, params, values)
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
    entry = registry.OPTIMIZERS.get(name)
    maker = entry.load()
    try:
        made = call_with(maker, values, "optimizer", f"optimizer={name}", {"params": params})
    except UserError:
        raise
    except (ValueError, TypeError, RuntimeError, LookupError) as exc:  # what torch's checks raise (betas=[]: Index)
        said = " ".join(str(exc).split())
        keys = [f"optimizer.{k}={v}" for k, v in values.items() if k.split("_")[0] in said.lower()
                or (str(v) in said and not isinstance(v, bool))]
        where = f" ({', '.join(keys)})" if keys else f" (its settings: {values})"
        at = f" at {registry.raised_at(exc, entry)}" if entry.plugin else ""
        raise ConfigError(f"optimizer={name} refuses its settings{where}: {getattr(maker, '__qualname__', name)}{at} "
                          f"says {said!r}. Change that optimizer.* value.") from None
    except (Exception, SystemExit) as exc:
        if not entry.plugin:
            raise
        raise registry.plugin_fault(entry, "making the optimizer", exc) from None
    if not isinstance(made, torch.optim.Optimizer):
        raise PluginError(f"{entry.described} returned {registry.brief(made)}, not a "
                          f"torch.optim.Optimizer: an optimizer is an Optimizer class, or a function that returns one "
                          f"built on the parameters it is given.")
    return made


def preflight(cfg: Any) -> None:
    """Every value of a training config that can be checked before anything is written: the trainer's settings, the
    seed, the batch size, each group's keys, the trackers, and the optimizer and scheduler through torch's own
    argument checks on a stand-in parameter (the scheduler stepped a few times). Where a plugin's model, dataset or
    task is chosen, its code runs too (`_dry_run`): its data read and checked, its model run on the meta device."""
    settings = build_settings(cfg)
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        shown = "null" if seed is None else repr(seed)
        raise ConfigError(f"seed={shown} must be a whole number from 0 to 2**32 - 1, e.g. seed=0.")
    data = _section(cfg, "data")
    batch_size(data)
    registry.DATASETS.get(data.get("name"))
    build_augment(data.get("augment"))
    model = _section(cfg, "model")
    if not registry.MODELS.get(model.pop("name", None)).plugin:
        check_model_values(model)
    task = _section(cfg, "task").get("name", "auto")
    if task != "auto":
        registry.TASKS.get(task)
    values = _section(cfg, "optimizer")
    opt_name = registry.OPTIMIZERS.get(values.pop("name", None)).name
    stand_in = _optimizer(opt_name, [torch.nn.Parameter(torch.zeros(1))], values)
    _step_stand_in(cfg, build_scheduler(cfg, stand_in, settings, STAND_IN_UPDATES, "min"))
    _check_logger(cfg)
    if _chooses_plugin(cfg):
        _dry_run(cfg, settings)


STAND_IN_UPDATES = 8  # optimizer updates per epoch of the stand-in run that preflight steps a scheduler through


def _step_stand_in(cfg: Any, scheduler: Any) -> None:
    """A few steps of the scheduler on the stand-in: torch checks some arguments only when it steps (StepLR's
    step_size=0 divides by zero at the first epoch's end), and a plugin's scheduler shows what it is."""
    if scheduler is None:
        return
    entry = registry.SCHEDULERS.get(_section(cfg, "scheduler", {"name": "none"}).get("name", "none"))
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    try:
        with warnings.catch_warnings():  # torch's advice on the order of optimizer and scheduler steps: a stand-in's
            warnings.simplefilter("ignore")
            for _ in range(3):
                scheduler.step(1.0) if plateau else scheduler.step()
            scheduler.load_state_dict(scheduler.state_dict())  # every checkpoint does this
    except (Exception, SystemExit) as exc:
        if entry.plugin and not isinstance(exc, (ValueError, ArithmeticError)):
            raise registry.plugin_fault(entry, "stepping its scheduler", exc, "A scheduler is a torch LR scheduler, "
                                        "or a function that returns one (or None)") from None
        said = " ".join(str(exc).split()) or type(exc).__name__
        keys = ", ".join(f"scheduler.{k}={_shown(v)}" for k, v in _section(cfg, "scheduler").items() if k != "name")
        raise ConfigError(f"scheduler={entry.name} fails when it steps ({keys or 'its defaults'}): "
                          f"{type(exc).__name__}: {said}. Change that scheduler.* value.") from None


def _check_logger(cfg: Any) -> None:
    """`logger=` names registered trackers, each with a group of its options (or none)."""
    for name, options in _section(cfg, "logger").items():
        entry = registry.TRACKERS.get(name)
        if options is not None and not isinstance(options, Mapping):
            raise ConfigError(f"logger.{name}={_shown(options)} is not a group of options: give them as "
                              f"logger.{name}.KEY=VALUE.")
        registry.check_keys(entry.load(), dict(options or {}), f"logger.{name}", f"logger={name}", {"run": None})


def _chooses_plugin(cfg: Any) -> bool:
    """Whether a plugin's model, dataset or task is chosen: their code runs in the dry run, before anything exists."""
    task = _section(cfg, "task").get("name", "auto")
    return (registry.MODELS.get(_section(cfg, "model").get("name")).plugin
            or registry.DATASETS.get(_section(cfg, "data").get("name")).plugin
            or (task != "auto" and registry.TASKS.get(task).plugin))


def _dry_run(cfg: Any, settings: TrainerSettings) -> None:
    """What a plugin does before training, done before anything is written: its dataset read and checked (kept for
    the build that follows, with the random state after it, so the run is what it would have been), its model built
    on the meta device and run on a batch of the data's shape, its task made around it."""
    from trainkit.engine.rng import rng_state, seed_everything

    seed_everything(_seed(cfg))
    data = build_data(cfg)
    if settings.devices == 1 or distributed.world_size() > 1:  # a launcher's parent process builds nothing itself
        _READ.update(key=_data_call(cfg, ("train", "val", "test"))[2], data=data, rng=rng_state())
    refuse_fatal(cfg, data)
    build_augment(_section(cfg, "data").get("augment"), data.meta)
    model = _section(cfg, "model")
    entry = registry.MODELS.get(model.pop("name", None))
    task_entry = task_of(cfg, entry, data.meta)
    shapes = _io_shapes(task_entry, data.meta)
    probe = probe_model(entry, model, _model_given(entry.load(), data.meta, False), data.meta, task_entry, shapes)
    if probe is not None and task_entry.plugin:
        values = _section(cfg, "task")
        values.pop("name", None)
        make_task(task_entry, probe, data.meta, values, examples(data.val) if data.val is not None else None)


def _params(fn: Any) -> Any:
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}


def component_names(cfg: Any) -> dict[str, Any]:
    """{kind: name} of the components a config chooses (registry kinds)."""
    group = lambda key: _section(cfg, key).get("name")
    return {"model": group("model"), "dataset": group("data"), "task": group("task"),
            "optimizer": group("optimizer"), "scheduler": group("scheduler")}


def plugin_origins(cfg: Any) -> dict[str, str]:
    """{kind: plugin module} for the components of `cfg` that plugins registered: a checkpoint keeps it, to say what to
    load when a later command lacks it."""
    return registry.origins(component_names(cfg))


def whole_number(value: Any, key: str, minimum: int = 1, example: int | None = None, who: str = "") -> int:
    """`key`=value as a whole number of at least `minimum` (7.0 counts as 7), or an error that names the key (`who`:
    what takes it, e.g. "trainkit.load(...).sample")."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{who + ': ' if who else ''}{key}={_shown(value)} must be a whole number of at least "
                          f"{minimum}, e.g. {key}={example if example is not None else max(minimum, 1)}.")
    return value


def not_the_checkpoint(output: Path, checkpoint_path: Path, key: str = "output") -> None:
    """A file a command writes must not be the checkpoint it reads, nor any other checkpoint (a .ckpt file)."""
    if output.exists() and (os.path.samefile(output, checkpoint_path) or output.suffix == ".ckpt"):
        which = "the checkpoint it reads" if os.path.samefile(output, checkpoint_path) else "a checkpoint"
        raise ConfigError(f"{key}={output} is {which}: writing there would destroy it. Give {key}= a new file, or "
                          f"leave it out (the command's run directory).")


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
    except UserError:
        raise
    except (TypeError, ValueError, ArithmeticError) as exc:  # torch's own checks of each argument
        said = " ".join(str(exc).split())
        settings_now = ", ".join(f"scheduler.{k}={_shown(v)}" for k, v in values.items())
        at = f" ({entry.described}, at {registry.raised_at(exc, entry)})" if entry.plugin else ""
        raise ConfigError(f"scheduler={name}{at} refuses its settings ({settings_now or 'its defaults'}): {said}. "
                          f"Change that scheduler.* value.") from None
    except (Exception, SystemExit) as exc:
        if not entry.plugin:
            raise
        raise registry.plugin_fault(entry, "making the scheduler", exc) from None
    if main is not None and (isinstance(main, torch.optim.Optimizer) or not all(
            callable(getattr(main, m, None)) for m in ("step", "state_dict", "load_state_dict"))):
        raise PluginError(f"{entry.described} returned {registry.brief(main)}, not a learning-rate "
                          f"scheduler: return a torch.optim.lr_scheduler object (or None for a constant rate).")
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
    from trainkit.trainer import TrainingData

    data = built.data
    fatal, warnings = refuse_fatal(cfg, data)
    loaders = built.loaders
    return TrainingData(data.meta, loaders["train"], loaders["val"], loaders.get("test"), examples(data.val),
                        list(getattr(data, "warnings", [])) + warnings + fatal)


def refuse_fatal(cfg: Any, data: DataSplits) -> tuple[list[str], list[str]]:
    """What the data check calls fatal for training is an error unless data.allow_missing_classes=true;
    (fatal, warnings) otherwise."""
    from trainkit.data.check import training_problems

    fatal, warnings = training_problems(data)
    if fatal and not _section(cfg, "data").get("allow_missing_classes", False):
        raise DataError(f"data={data.meta.name}: {' '.join(fatal)} Fix the data, or set data.allow_missing_classes=true "
                        f"if that is what you mean.")
    return fatal, warnings


def build_trackers(cfg: Any, run_dir: Path, settings: TrainerSettings, saved: Any = None) -> Any:
    """The trackers `logger=` chooses (configs/train.yaml's default: tensorboard; trainer.tensorboard=false leaves it
    out; `logger=[]`, which leaves no logger section, none), given the flattened config as params; a resumed run
    continues the tracker runs whose ids its checkpoint carries."""
    from trainkit.logging.trackers import TrackerRun, open_trackers
    from trainkit.rundirs.read import overrides_of
    from trainkit.rundirs.resume import flatten

    chosen = _section(cfg, "logger")
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
