"""trainkit from Python (notebooks, scripts), in this process: the same configs, run directories, logs and
checkpoints as the command line, without touching sys.argv, the root logger or any module's globals.

    import trainkit
    summary = trainkit.train(["model=cnn", "data=mnist_csv", "data.train_csv=train.csv"])      # `trainkit train ...`
    trainer = trainkit.make_trainer(data={"name": "mnist_csv", "train_csv": "train.csv"}, model="cnn")
    summary = trainer.run()                                                                     # no config file
    model = trainkit.load(summary["checkpoints"]["best"])
    model.predict(pixels)  # class names
    table = trainkit.runs("outputs/multirun/2026-01-01/12-00-00")                               # a DataFrame
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from trainkit.errors import ConfigError, UserError


def _strings(value: Any, what: str, example: str) -> list[str]:
    if isinstance(value, (Mapping, set, frozenset)):  # keys only, or no order: never what was meant
        raise ConfigError(f"{what} takes a list of strings, e.g. {example}; it was given a {type(value).__name__} "
                          f"{str(value)[:60]!r} (from a dict: [f\"{{k}}={{v}}\" for k, v in d.items()]).")
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(f"{what} takes a list of strings, e.g. {example}; it was given {type(value).__name__} "
                          f"{str(value)[:80]!r}.")
    items = list(value)
    wrong = [v for v in items if not isinstance(v, str)]
    if wrong:
        raise ConfigError(f"{what} takes a list of strings, e.g. {example}; {wrong[0]!r} is a "
                          f"{type(wrong[0]).__name__}.")
    return items


def _callbacks(value: Any, what: str) -> tuple[Any, ...]:
    """trainkit.Callback objects, checked before anything runs (a class where an object belongs, a function...)."""
    from trainkit.trainer import Callback

    if value is None:
        return ()
    items = [value] if isinstance(value, (Callback, type)) else None
    if items is None:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise ConfigError(f"{what} takes a list of trainkit.Callback objects, e.g. callbacks=[MyCallback()]; it was "
                              f"given {type(value).__name__} {str(value)[:60]!r}.")
        items = list(value)
    for item in items:
        if not isinstance(item, Callback):
            hint = (f"{item.__name__} is a class: give an object of it, callbacks=[{item.__name__}()]"
                    if isinstance(item, type) and issubclass(item, Callback) else
                    f"{type(item).__name__} {str(item)[:60]!r} is not a trainkit.trainer.Callback: subclass it "
                    f"(class MyCallback(trainkit.Callback): ...) and override the on_* methods you need")
            raise ConfigError(f"{what}: {hint}.")
    return tuple(items)


def run(name: str, overrides: Iterable[str] = (), callbacks: Iterable[Any] = ()) -> Any:
    """`trainkit NAME OVERRIDES` in this process (train, eval, predict, export, sample, data check): the same checks,
    run directory and files; returns what the command returns (train: the summary dict) and raises trainkit's error
    (a UserError with the one-paragraph message) where the command would exit 1 or 2. Sweeps (-m) run from the
    command line."""
    from trainkit.cli.inprocess import run as run_command

    if not isinstance(name, str):
        raise ConfigError(f"trainkit.api.run takes a command's name, e.g. trainkit.api.run(\"eval\", [...]), not "
                          f"{type(name).__name__} {str(name)[:60]!r}.")
    what = f"trainkit.{'train' if name == 'train' else 'api.run'}"
    args = _strings(overrides, what, '["model=cnn"]')
    return run_command(name, args, _callbacks(callbacks, f"{what}(callbacks=...)"))


def train(overrides: Iterable[str] = (), callbacks: Iterable[Any] = ()) -> dict[str, Any]:
    """`trainkit train OVERRIDES` in this process: the same configs, run directory, logs and checkpoints. Returns
    the run's summary (summary.json: run_dir, best and test metrics, checkpoint paths); raises trainkit's error
    (a UserError with the one-paragraph message) where the command would exit 1. `callbacks`:
    trainkit.Callback objects attached to the run's Trainer."""
    return run("train", overrides, callbacks)


GROUPS = ("data", "model", "task", "optimizer", "scheduler")


def _group(value: Any, key: str) -> dict[str, Any]:
    """A component by name (`"cnn"`), or its name and keyword arguments (`{"name": "cnn", "channels": [32]}`)."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return dict(value)
    raise ConfigError(f"make_trainer({key}=...) takes a registered {key} by name, e.g. {key}=\"NAME\", or a dict with "
                      f"its name and keyword arguments, e.g. {key}={{\"name\": \"NAME\", ...}}; it was given "
                      f"{type(value).__name__} {str(value)[:60]!r}.")


def _logger(value: Any) -> dict[str, Any]:
    if value is None:
        return {"tensorboard": {}}
    if isinstance(value, str):
        return {value: {}}
    if isinstance(value, Mapping):
        wrong = next((k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, (Mapping, type(None)))),
                     None)
        if wrong is not None:
            raise ConfigError(f"make_trainer(logger={{...}}) takes tracker names with a dict of their options each, "
                              f"e.g. logger={{\"mlflow\": {{\"experiment\": \"x\"}}}}; {wrong!r} has "
                              f"{type(value[wrong]).__name__} {str(value[wrong])[:40]!r}.")
        return {k: dict(v or {}) for k, v in value.items()}
    return {name: {} for name in _strings(value, "make_trainer(logger=...)", '["tensorboard", "csv"]')}


def make_trainer(run_dir: str | Path | None = None, *, data: Any, model: Any, task: Any = "auto",
                 optimizer: Any = "adam", scheduler: Any = "none", trainer: Mapping[str, Any] | None = None,
                 seed: int = 0, logger: Any = None, callbacks: Iterable[Any] = (),
                 plugins: Iterable[str] = ()) -> Any:
    """A trainkit.Trainer of registered components, chosen by name with keyword arguments and no config file: each of
    data, model, task, optimizer and scheduler is a name or a dict of its name and keyword arguments (what its
    `*.key=value` overrides would be); `trainer`: trainer settings (trainkit.engine.settings.TrainerSettings keys);
    `logger`: a tracker's name, a list of names, or {name: options}. `run_dir`: default a new
    outputs/<date>/<time>/. The defaults are the components' own (their signatures'), not configs/' YAML files.
    Call `.run()` for fit, test and the summary; its checkpoints work with trainkit eval, predict and export."""
    from trainkit import registry
    from trainkit.build import build_trainer, preflight
    from trainkit.rundirs.claim import claim, write_hydra_files

    modules = _strings(plugins, "make_trainer(plugins=...)", '["my_project.nets"]')
    registry.load_plugins(modules)
    if isinstance(trainer, (str, bytes)) or (trainer is not None and not isinstance(trainer, Mapping)):
        raise ConfigError(f"make_trainer(trainer=...) takes a dict of trainer settings, e.g. "
                          f"trainer={{\"max_epochs\": 5}}; it was given {type(trainer).__name__}.")
    if run_dir is not None and not isinstance(run_dir, (str, Path)):
        raise ConfigError(f"make_trainer(run_dir=...) takes a folder's path, e.g. run_dir=\"outputs/my_run\", or None "
                          f"(a new outputs/DATE/TIME); not {type(run_dir).__name__}.")
    callbacks = _callbacks(callbacks, "make_trainer(callbacks=...)")
    recipe = {key: _group(value, key) for key, value in zip(GROUPS, (data, model, task, optimizer, scheduler))}
    recipe.update(trainer=dict(trainer or {}), seed=seed, logger=_logger(logger), plugins=modules, resume=None)
    preflight(recipe)  # before a run directory exists
    made = run_dir is None or not Path(run_dir).exists()
    run_dir = Path(claim(time.strftime("outputs/%Y-%m-%d/%H-%M-%S")) if run_dir is None else run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_hydra_files(run_dir, recipe, [], "train")
        return build_trainer(recipe, run_dir, callbacks=callbacks)
    except BaseException as exc:
        if made and not getattr(exc, "keeps_run_dir", False) and not any(run_dir.glob("checkpoints/*.ckpt")):
            shutil.rmtree(run_dir, ignore_errors=True)  # refused before any result: nothing half-made is left
        raise


class Model:
    """A trained model restored from a checkpoint: call it on raw inputs (uint8 or float pixels, N×C×H×W or one
    row of pixels per sample; a regression's x values) for its outputs (class logits, predictions; a GAN's
    generator takes latent noise); `.predict` for what `trainkit predict` writes (class names for a
    classifier); `.meta` is the data's description (shapes, class names, normalization)."""

    def __init__(self, restored: Any) -> None:
        self.task = restored.task
        self.meta = restored.meta
        self.module = restored.task.deployable()
        self.device = restored.device
        self.checkpoint = restored.path
        self.input_shape = tuple(self.task.example_input(1).shape[1:])  # one sample of what `module` takes

    def _shaped(self, x: Any) -> Tensor:
        if isinstance(x, (str, bytes)):
            raise UserError(f"trainkit.load({self.checkpoint}): inputs must be numbers (a tensor, a numpy array or "
                            f"nested lists of numbers), not the {type(x).__name__} {x[:40]!r}; to predict on a file, "
                            f"run trainkit predict ckpt={self.checkpoint} input=PATH.")
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise UserError(f"trainkit.load({self.checkpoint}): inputs must be numbers (a tensor, a numpy array or "
                            f"nested lists of numbers), not {type(x).__name__} ({' '.join(str(exc).split())[:100]})."
                            ) from None
        if x.is_complex() or x.dtype == torch.bool or x.numel() == 0:
            what = "no values" if x.numel() == 0 else f"{str(x.dtype).removeprefix('torch.')} values"
            raise UserError(f"trainkit.load({self.checkpoint}): inputs hold {what}; give real numbers (pixels 0..255, "
                            f"x values), at least one sample.")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            rows = ~torch.isfinite(x.reshape(x.shape[0] if x.dim() else 1, -1)).all(1)
            raise UserError(f"trainkit.load({self.checkpoint}): inputs hold NaN or inf values (at {int(rows.sum())} "
                            f"of {len(rows)} rows, the first at row {int(rows.nonzero()[0])}): the model would "
                            f"answer anything for them. Drop or fill those values first.")
        shape = self.input_shape
        if tuple(x.shape[1:]) == shape:
            return x
        if tuple(x.shape) == shape:  # one sample
            return x.unsqueeze(0)
        if x.dim() == 2 and x.shape[1] == math.prod(shape):  # one flattened sample per row (pixel-row CSVs)
            return x.reshape(len(x), *shape)
        if x.dim() == 1 and shape == (1,):  # a column of x values
            return x.unsqueeze(1)
        raise UserError(f"trainkit.load({self.checkpoint}): inputs of shape {list(x.shape)} do not fit this model, "
                        f"which takes samples of shape {list(shape)} (a batch: N×{'×'.join(map(str, shape))}, or "
                        f"N×{math.prod(shape)} flattened).")

    @torch.inference_mode()
    def __call__(self, x: Any) -> Tensor:
        """Outputs for a batch of raw inputs, float32 on the CPU (a GAN: samples for a batch of latent noise)."""
        return self.module(self._shaped(x).to(self.device)).float().cpu()

    @torch.inference_mode()
    def predict(self, x: Any) -> list[Any]:
        """The prediction per input, as `trainkit predict` writes it: a classifier's class names, a regression's
        values (a list per sample where there are several targets)."""
        return self.task.predict(self._shaped(x)).values

    def sample(self, n: int, seed: int = 0) -> Any:
        """`n` new samples, for a model that generates (trainkit sample): a PIL image and, for points, a table."""
        from trainkit.build import whole_number

        n = whole_number(n, "n", 1, 64, who="trainkit.load(...).sample")
        seed = whole_number(seed, "seed", 0, 0, who="trainkit.load(...).sample")
        return self.task.sample(n, seed)


def load(checkpoint: str | Path, device: str | None = None, plugins: Iterable[str] = ()) -> Model:
    """The model in `checkpoint` (a .ckpt trainkit wrote), without its training data. `device`: cpu, cuda, ...;
    default: the checkpoint's own trainer.device (auto: a GPU where there is one). `plugins`: modules to import
    first, which register the run's own model or task (importing them yourself does the same)."""
    from omegaconf import OmegaConf

    from trainkit import registry
    from trainkit.restore import restore

    if not isinstance(checkpoint, (str, Path)):
        raise ConfigError(f"trainkit.load takes a checkpoint's path (a .ckpt file or a run directory), not "
                          f"{type(checkpoint).__name__}.")
    if device is not None and not isinstance(device, str):
        raise ConfigError(f"trainkit.load(device=...) takes a device name such as \"cpu\" or \"cuda\", not "
                          f"{type(device).__name__}.")
    registry.load_plugins(_strings(plugins, "trainkit.load(plugins=...)", '["my_project.nets"]'))
    overrides = OmegaConf.create({"trainer": {"device": device}}) if device else None
    return Model(restore(checkpoint, overrides))


def runs(path: str | Path = "outputs") -> Any:
    """Every training run at or below `path` (single runs and sweep jobs) as a pandas DataFrame, newest first."""
    from trainkit.rundirs.frame import runs_frame

    if not isinstance(path, (str, Path)):
        raise ConfigError(f"trainkit.runs takes a folder's path, e.g. trainkit.runs(\"outputs\"), not "
                          f"{type(path).__name__}.")
    return runs_frame(path if isinstance(path, str) and "://" in path else Path(path))
