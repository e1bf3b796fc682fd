"""A checkpoint brought back to life from what it carries alone: its recipe, the description of its data and
its weights. eval, predict, export, sample and `trainkit.load` start here; only eval reads data again (the
split it evaluates).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from trainkit import registry
from trainkit.build import (
    build_data,
    build_eval_loader,
    build_runtime,
    build_task,
    component_names,
    examples,
    guarded,
    place,
)
from trainkit.data.base import DataError, DataMeta, DataSplits, Split
from trainkit.engine import checkpoint
from trainkit.engine.optimization import Precision
from trainkit.engine.rng import seed_everything
from trainkit.engine.settings import TrainerSettings
from trainkit.errors import ConfigError
from trainkit.rundirs import remote
from trainkit.tasks.base import Task

RECIPE_KEYS = ("data", "model", "optimizer", "scheduler", "trainer", "seed")  # overridable in the stored config


@dataclass
class Restored:
    """A checkpoint brought back: its payload, its recipe (overrides applied), its task in eval mode."""

    path: Path
    payload: dict[str, Any]
    recipe: DictConfig
    settings: TrainerSettings
    device: torch.device
    task: Task
    line: list[str] = field(default_factory=list)  # the command as typed (for hints that say what to type)

    @property
    def meta(self) -> DataMeta:
        return self.task.meta

    @property
    def epoch(self) -> int:
        return self.payload["fit"]["epoch"]

    @property
    def autocast(self) -> Any:
        return Precision(self.settings.precision, self.device).autocast


def stored_config(payload: dict[str, Any], overrides: DictConfig | None = None) -> DictConfig:
    """The checkpoint's config with a command's `data.*`, `trainer.*`, ... overrides merged on top."""
    stored = OmegaConf.create(payload["config"])
    if overrides is None:
        return stored
    changes = {k: OmegaConf.to_container(overrides[k]) if isinstance(overrides[k], DictConfig) else overrides[k]
               for k in RECIPE_KEYS if k in overrides}
    data = changes.get("data")
    if isinstance(data, dict) and data.get("name") not in (None, OmegaConf.select(stored, "data.name")):
        stored.data = data  # another data set (+data=cifar10): its own keys, none of the stored one's
        del changes["data"]
    return OmegaConf.merge(stored, changes)  # type: ignore[return-value]


def _damaged(path: Path, part: str, exc: BaseException) -> checkpoint.CheckpointError:
    return checkpoint.CheckpointError(
        f"checkpoint {path} is damaged: its {part} cannot be read ({type(exc).__name__}: "
        f"{' '.join(str(exc).split())[:160]}). Use another checkpoint of the run (checkpoints/last.ckpt, "
        f"epoch*.ckpt), or train again."
    )


def _read(payload: dict[str, Any], path: Path, overrides: DictConfig | None) -> tuple[DictConfig, DataMeta, Split | None]:
    """The recipe (overrides applied) and the data description a checkpoint holds. What a damaged file holds fails
    here in a few known ways, each named; an override that does not fit fails as a ConfigError; anything else is a
    bug, and goes on as one."""
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    try:
        stored = OmegaConf.create(payload["config"]) if isinstance(payload.get("config"), str) else None
    except (yaml.YAMLError, OmegaConfBaseException, ValueError) as exc:
        raise _damaged(path, "stored config", exc) from None
    if not isinstance(stored, DictConfig) or not isinstance(payload.get("modules"), dict):
        part = "stored config" if not isinstance(stored, DictConfig) else "weights"
        raise _damaged(path, part, TypeError(f"it holds {type(payload.get('config' if stored is None else 'modules')).__name__}"))
    fit = payload.get("fit")
    if not isinstance(fit, dict) or isinstance(fit.get("epoch"), bool) or not isinstance(fit.get("epoch"), int):
        raise _damaged(path, "training counters", TypeError(f"fit={str(fit)[:80]}"))
    try:
        recipe = stored_config(payload, overrides)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"the overrides do not fit the config stored in {path}: {' '.join(str(exc).split())[:200]}. "
                          f"Change only keys the run has (trainkit runs --compare shows a run's config).") from None
    if "data" in payload:
        try:
            meta, samples = checkpoint.read_data_section(payload["data"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _damaged(path, "description of its data", exc) from None
        return recipe, meta, samples
    meta, samples = _data_description(payload, recipe, path)
    return recipe, meta, samples


def restore(ckpt: str | Path, overrides: DictConfig | None = None, line: list[str] | None = None) -> Restored:
    """The task of `ckpt`, built from its own recipe and data description, weights loaded, in eval mode. `line`: the
    command as typed, for the hint that names the plugins to load."""
    if remote.is_url(ckpt):  # s3://...: a local copy, fetched once and reused while the object is unchanged
        ckpt = remote.checkpoint(str(ckpt))
    path = checkpoint.in_run(ckpt)
    payload = checkpoint.load(path)
    recipe, meta, samples = _read(payload, path, overrides)
    require_plugins(payload, recipe, path, ("model", "task"), line)
    seed_everything(recipe.get("seed") or 0)
    settings, device = build_runtime(recipe)
    task = build_task(recipe, meta, samples, restoring=True)
    place(task, [], settings, device)
    checkpoint.load_modules(payload, task.modules(), path)
    for module in task.modules().values():
        module.eval()  # after training: no dropout, no batch statistics
    return Restored(path, payload, recipe, settings, device, task, line or [])


def task_member(restored: Restored, name: str) -> Any:
    """The restored task's method `name` (predict, report, deployable, ...), for a command to call. A plugin's task
    without it is told what it lacks; what the plugin's method raises names the plugin and its line."""
    task = restored.task
    entry = next((e for e in registry.TASKS.entries.values() if e.plugin and e.target is type(task)), None)
    member = getattr(task, name, None)
    if not callable(member):
        who = entry.described if entry is not None else f"the task {type(task).__name__}"
        raise registry.PluginError(f"{who} has no {name}() method, which this command calls (the Task protocol of "
                                   f"trainkit.tasks.base; docs/extending.md, 'The task contract'). Add it, or subclass "
                                   f"trainkit.tasks.base.SingleNetTask.")
    if entry is None:
        return member
    return lambda *args, **kwargs: guarded(entry, f"running its {name}()", member, *args, **kwargs)


def require_plugins(payload: dict[str, Any], recipe: DictConfig, path: Path, kinds: tuple[str, ...],
                    line: list[str] | None = None) -> None:
    """Every component of `kinds` that the checkpoint's recipe names must be registered now. A checkpoint never loads
    code itself: a plugin's component is there only when the user loaded its module, and this says which one."""
    names = component_names(recipe)
    stored = payload.get("plugins", {})
    for kind in kinds:
        name = names.get(kind)
        if name is None or (kind == "task" and name == "auto") or name in registry.REGISTRIES[kind]:
            continue
        module = stored.get(kind) or next(iter(recipe.get("plugins") or []), None)
        typed = line or ["trainkit", "eval", f"ckpt={path}"]
        if module is None:
            raise ConfigError(f"{path} was trained with the {kind} {name!r}, which nothing loaded has registered "
                              f"(a checkpoint never loads code by itself). {registry.REGISTRIES[kind].choices()}")
        plugins = sorted({module, *stored.values(), *(recipe.get("plugins") or [])})
        command = " ".join([*(a for a in typed if not a.lstrip("+").startswith("plugins=")),
                            f"plugins=[{','.join(plugins)}]"])
        raise ConfigError(
            f"{path} was trained with the {kind} {name!r} of the plugin module {module}, which is not loaded (a "
            f"checkpoint never loads code by itself). Load it: {command} (where {module} is importable: its folder is "
            f"the working directory or on PYTHONPATH, or its package is installed); from Python, "
            f"trainkit.load(..., plugins=[{', '.join(json.dumps(p) for p in plugins)}])."
        )


def _data_description(payload: dict[str, Any], recipe: DictConfig, path: Path) -> tuple[DataMeta, Split]:
    """What the checkpoint says of its data. Format 1 (trainkit 0.1.0) did not store it: it is read from the
    training data its config names, as that release did, or the error says what to pass."""
    if "data" in payload:
        return checkpoint.read_data_section(payload["data"])
    try:
        data = build_data(recipe)
    except DataError as err:
        version = payload.get("versions", {}).get("trainkit", "0.1.0")
        raise checkpoint.CheckpointError(
            f"{path} was written by trainkit {version} (checkpoint format {payload.get('format_version', 1)}), "
            f"which did not store a description of its data, so it is read from the training data the checkpoint's "
            f"config names, and that failed: {err} Pass the data it was trained on on the command line (e.g. "
            f"data.train_csv=PATH for mnist_csv, data.root=DIR for cifar10); any checkpoint trainkit writes now "
            f"carries that description itself."
        ) from None
    return data.meta, examples(data.val)


def read_split(restored: Restored, split: str, with_train: bool = False) -> tuple[DataSplits, Split | None]:
    """The data of one split (`test` or `val`) from the recipe's data config, checked against the checkpoint's
    description; with `with_train`, also the training split where its files can be read (else None)."""
    recipe = restored.recipe
    require_plugins(restored.payload, recipe, restored.path, ("dataset",), restored.line)
    data = None
    if with_train:
        try:
            data = build_data(recipe, splits=(split, "train"))
        except DataError:
            data = None  # the training files are gone: the report does without them
    if data is None:
        data = build_data(recipe, splits=(split,))
    ours, theirs = restored.meta, data.meta
    if tuple(ours.in_shape) != tuple(theirs.in_shape) or ours.num_outputs != theirs.num_outputs:
        raise ConfigError(
            f"the data given (data={theirs.name}: samples of shape {list(theirs.in_shape)}, {theirs.num_outputs} "
            f"outputs) does not fit the checkpoint {restored.path} (data={ours.name}: {list(ours.in_shape)}, "
            f"{ours.num_outputs} outputs). Evaluate it on data of the kind it was trained on."
        )
    return data, data.train


def eval_loader(restored: Restored, split: Split) -> Any:
    """Batches of `split` normalized exactly as in training, on the restored task's device."""
    return build_eval_loader(restored.recipe, split, restored.meta, restored.device, restored.settings)
