"""Names → code, for every component a config chooses: models, datasets, tasks, optimizers, schedulers and trackers,
and the cluster environments a process detects.

A config only ever names an entry; code fills the registries: trainkit's own built-ins and the plugins a user loads,
by `plugins=[module,...]` on the command line or an installed package's `trainkit.plugins` entry point. Built-in
models, datasets, tasks, optimizers and schedulers are listed at the bottom of this file by "module:attribute",
imported only when chosen (importing every model would pull in torchvision and torch._dynamo: about 4 s at every
start); built-in trackers and cluster environments register themselves in their own files (one file each), which are
imported when their registry is first read.
A config, above all one stored in a checkpoint, never makes trainkit import anything: Hydra's `_target_` would be
arbitrary code execution the day a config comes from someone else.

    import trainkit
    from torch import nn

    @trainkit.register_model("my_net")
    class MyNet(nn.Module):
        def __init__(self, in_shape, num_outputs, width: int = 64): ...
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from trainkit.errors import ConfigError

BUILTIN = "trainkit"
ENTRY_POINT_GROUP = "trainkit.plugins"


class PluginError(ConfigError):
    """A plugin module that cannot be loaded, or that registers a name twice."""


@dataclass(frozen=True)
class Entry:
    """One registered component: what it is called, the code it names, and who registered it where."""

    kind: str
    name: str
    target: Any  # the object; trainkit's own built-ins: "module:attribute", imported when first used
    origin: str  # "trainkit", or the module that registered it (a plugin)
    where: str  # file:line of the registration
    task: str | None = None  # a model's own task under task=auto (a GAN's: gan); None: the data's kind decides
    inputs: Any = None  # a dataset's reader of new inputs for `trainkit predict` (data/inputs.py); None: by shape

    def load(self) -> Any:
        return _resolve(self.target, self.origin)

    @property
    def chosen(self) -> str:
        """How a config chooses it, e.g. `model=resmlp` (a tracker: `logger=NAME`)."""
        group = REGISTRIES[self.kind].group if self.kind in REGISTRIES else None
        return f"{group or self.kind}={self.name}"

    @property
    def described(self) -> str:
        """`model=resmlp (the model registered by the plugin my_project.nets at my_project/nets.py:14)`."""
        who = f"the plugin {self.origin} at {self.where}" if self.plugin else "trainkit"
        return f"{self.chosen} (the {self.kind} registered by {who})"

    def load_inputs(self) -> Any:
        """The dataset's reader of new inputs, or None (then predict picks one by the samples' shape)."""
        return None if self.inputs is None else _resolve(self.inputs, self.origin)

    @property
    def plugin(self) -> bool:
        return self.origin != BUILTIN


def _resolve(target: Any, origin: str) -> Any:
    if isinstance(target, str) and origin == BUILTIN:
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute)
    return target


class Registry:
    """The entries of one kind of component; `key` is the config key that names one (e.g. `model.name`), `group` the
    config group that chooses it (None: nothing chooses it, e.g. a cluster environment is detected). `package`: where
    the built-ins register themselves, one module each, imported when the registry is first read."""

    def __init__(self, kind: str, key: str, group: str | None, package: str | None = None) -> None:
        self.kind, self.key, self.group, self.package = kind, key, group, package
        self._entries: dict[str, Entry] = {}
        self._discovered = package is None

    @property
    def entries(self) -> dict[str, Entry]:
        if not self._discovered:
            self._discovered = True
            import pkgutil

            package = importlib.import_module(self.package)
            for found in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{self.package}.{found.name}")
        return self._entries

    def add(self, name: str, target: Any, origin: str, where: str, **options: Any) -> None:
        if not isinstance(name, str) or not name or any(c in name for c in " ,=[]/"):
            raise PluginError(f"{where}: {name!r} cannot name a {self.kind}: use a word such as 'my_net'.")
        if origin != BUILTIN and not callable(target):
            raise PluginError(f"{where}: the {self.kind} {name!r} registered by {origin} is {type(target).__name__} "
                              f"{str(target)[:60]!r}, not a class or function: register the class or function that "
                              f"makes the {self.kind} (trainkit.register_{self.kind.split()[0]}).")
        earlier = self.entries.get(name)
        if earlier is not None and earlier.where != where:  # the same line run twice (a reload) is no conflict
            raise PluginError(
                f"the {self.kind} name {name!r} is registered twice: by {earlier.origin} at {earlier.where}, and by "
                f"{origin} at {where}. Rename one of them (a name chooses exactly one {self.kind})."
            )
        self._entries[name] = Entry(self.kind, name, target, origin, where, **options)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.entries

    def names(self) -> list[str]:
        return list(self.entries)

    def get(self, name: Any) -> Entry:
        """The entry called `name`, or an error that lists the built-ins and the plugins' names."""
        if name in self:
            return self.entries[name]
        raise ConfigError(f"{self.key}={name!r} is not a known {self.kind}. {self.choices()}")

    def choices(self) -> str:
        builtins = [n for n, e in self.entries.items() if not e.plugin]
        plugins = [f"{n} (from {e.origin})" for n, e in self.entries.items() if e.plugin]
        said = f"Choose {self.group}= one of the built-ins: {', '.join(builtins)}"
        if plugins:
            return f"{said}; or of the loaded plugins': {', '.join(plugins)}."
        return (f"{said}. No plugin {self.kind} is loaded: a {self.kind} of your own is registered by a module you "
                f"load with plugins=[your_module] (from Python: plugins=[\"your_module\"]; `trainkit list` shows every "
                f"name).")


MODELS = Registry("model", "model.name", "model")
DATASETS = Registry("dataset", "data.name", "data")
TASKS = Registry("task", "task.name", "task")
OPTIMIZERS = Registry("optimizer", "optimizer.name", "optimizer")
SCHEDULERS = Registry("scheduler", "scheduler.name", "scheduler")
TRACKERS = Registry("tracker", "logger", "logger", package="trainkit.logging.trackers")
CLUSTERS = Registry("cluster environment", "trainer.cluster", None, package="trainkit.clusters")
REGISTRIES = {r.kind: r for r in (MODELS, DATASETS, TASKS, OPTIMIZERS, SCHEDULERS, TRACKERS, CLUSTERS)}


def _caller(depth: int = 2) -> tuple[str, str]:
    """(module, file:line) of the code that called the registering function."""
    frame = sys._getframe(depth)
    return frame.f_globals.get("__name__", "?"), f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _register(registry: Registry, name: str, target: Any, options: dict[str, Any]) -> Any:
    module, where = _caller(3)
    origin = BUILTIN if module == BUILTIN or module.startswith(BUILTIN + ".") else module
    if target is not None:
        registry.add(name, target, origin, where, **options)
        return target

    def decorate(obj: Any) -> Any:
        registry.add(name, obj, origin, where, **options)
        return obj

    return decorate


def register_model(name: str, target: Any = None, *, task: str | None = None) -> Any:
    """Register a model: a class or function returning an `nn.Module`, called with the `model.*` keys and, where its
    signature has them, `in_shape` (one sample's shape), `num_outputs` (classes or targets), `meta` (the data's
    DataMeta) and `from_checkpoint` (True when a checkpoint's weights will replace its own: fetch no pretrained
    weights). `task`: the task that trains it when `task=auto` (default: the one for the data's kind).
    As a decorator: `@register_model("my_net")`; or `register_model("my_net", MyNet)`."""
    return _register(MODELS, name, target, {"task": task} if task else {})


def register_dataset(name: str, target: Any = None, *, inputs: Any = None) -> Any:
    """Register a dataset: a function `load(splits, **data_keys) -> DataSplits` (and `seed` where it takes one), called
    with the `data.*` keys other than name/batch_size/augment/on_device. `splits` says which of train, val and test
    the command needs. Splits may hold numpy arrays or tensors: uint8 N×C×H×W images or float N×D vectors.
    `inputs`: how `trainkit predict` reads new inputs for a model of this data (a trainkit.data.inputs.InputReader
    class); by default images (C×H×W samples: image files, folders, index CSVs) or CSV rows of values."""
    return _register(DATASETS, name, target, {"inputs": inputs} if inputs is not None else {})


def register_task(name: str, target: Any = None) -> Any:
    """Register a task: a class implementing trainkit.tasks.base.Task, constructed as `cls(model, meta, **task_keys)`
    (and `examples=` a few stored samples, where its signature takes it)."""
    return _register(TASKS, name, target, {})


def register_optimizer(name: str, target: Any = None) -> Any:
    """Register an optimizer: a `torch.optim.Optimizer` class, or a function `(params, **optimizer_keys)` returning
    one."""
    return _register(OPTIMIZERS, name, target, {})


def register_scheduler(name: str, target: Any = None) -> Any:
    """Register a learning-rate scheduler: a class or function `(optimizer, **scheduler_keys)` (and, where its
    signature has them, `total_steps` and `steps_per_epoch`, in optimizer updates after any warm-up, and
    `monitor_mode`, the task's min or max). It is stepped after every optimizer update; a function may return None
    (no scheduler)."""
    return _register(SCHEDULERS, name, target, {})


def register_tracker(name: str, target: Any = None) -> Any:
    """Register an experiment tracker, chosen with `logger=NAME` (several: `logger=[tensorboard,NAME]`): a class
    constructed as `cls(run: trainkit.logging.trackers.TrackerRun, **logger.NAME keys)` with the methods of
    trainkit.logging.trackers.Tracker (metrics, image, flush, finish, end) and a `run_id`."""
    return _register(TRACKERS, name, target, {})


def register_cluster(name: str, target: Any = None) -> Any:
    """Register a cluster environment: a subclass of trainkit.clusters.ClusterEnvironment whose `detect()` says when a
    process runs in it; it owns the rank/world environment, pre-emption signals and requeue there
    (trainer.cluster=auto picks the detected one with the highest `priority`)."""
    return _register(CLUSTERS, name, target, {})


# --- plugins -----------------------------------------------------------------------------------------------------
LOADED: dict[str, str] = {}  # plugin module → how it was loaded ("plugins=" or "entry point DIST")
_ENTRY_POINTS_READ = False


def load_plugins(modules: Iterable[str], how: str = "plugins=") -> None:
    """Import each module the user named (the working directory is importable), so that it registers its
    components. Only a person's command line or an installed entry point ever gets here, never a config."""
    load_entry_points()
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for module in modules:
        if not isinstance(module, str) or not all(part.isidentifier() for part in module.split(".")):
            raise PluginError(f"plugins: {module!r} is not a Python module name; give dotted names, e.g. "
                              f"plugins=[my_project.nets] on the command line, plugins=[\"my_project.nets\"] "
                              f"from Python.")
        if module not in LOADED:
            _import(module, how)


def _import(module: str, how: str) -> Any:
    try:
        loaded = importlib.import_module(module)
    except PluginError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):  # the plugin itself, not something it imports
            raise PluginError(f"{how}{module}: no module {exc.name!r} in the working directory ({os.getcwd()}) or the "
                              f"installed packages. Run trainkit where {module.replace('.', '/')}.py is, or install "
                              f"the package that has it.") from None
        raise PluginError(_import_failure(module, how, exc)) from None
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # an exit at import is the plugin's, not trainkit's
        raise PluginError(_import_failure(module, how, exc)) from None
    LOADED[module] = how
    return loaded


# Where Python's own library and trainkit live: frames there are not the user's code.
LIBRARY_PATHS = (os.path.dirname(os.__file__), os.path.dirname(os.path.abspath(__file__)) + os.sep)


def _import_failure(module: str, how: str, exc: BaseException) -> str:
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{exc.filename}:{exc.lineno}"
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        own = [f for f in frames if "importlib" not in f.filename and not f.filename.startswith("<")] or frames
        mine = [f for f in own if not f.filename.startswith(LIBRARY_PATHS) and "site-packages" not in f.filename]
        last = (mine or own)[-1] if own else None
        where = f"{last.filename}:{last.lineno}" if last is not None else "?"
    said = " ".join(str(exc).split()) or type(exc).__name__
    plugin = f"the plugin module {module} ({how.rstrip('=').rstrip(': ')})"
    if isinstance(exc, SystemExit):
        return (f"{plugin} exited while it was imported: {where}: sys.exit({exc.code!r}). A plugin module defines and "
                f"registers components; it must not end the process: remove that call, or put it under "
                f"`if __name__ == \"__main__\":`.")
    if isinstance(exc, KeyboardInterrupt):
        return (f"{plugin} was interrupted while it was imported: {where}: KeyboardInterrupt. If you pressed Ctrl-C, "
                f"run the command again; if the module raises KeyboardInterrupt itself, remove that line.")
    return (f"{plugin} failed to import: {where}: {type(exc).__name__}: {said}. "
            f"Fix that line (python -c 'import {module}' shows the whole traceback).")


def raised_at(exc: BaseException, entry: Entry | None = None) -> str:
    """file:line where `exc` left the user's own code: the deepest frame outside Python's library, the installed
    packages and trainkit; else the deepest in the file that registered `entry`; else where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if not f.filename.startswith(LIBRARY_PATHS) and "site-packages" not in f.filename
           and not f.filename.startswith("<")]
    registered = entry.where.rpartition(":")[0] if entry is not None else None
    found = own or [f for f in frames if f.filename == registered] or frames[-1:]
    if not found:
        return entry.where if entry is not None else "?"
    return f"{found[-1].filename}:{found[-1].lineno}"


def brief(value: Any) -> str:
    """A value as a message shows it: its type and the start of its text, on one line."""
    return f"{type(value).__name__} {' '.join(str(value).split())[:60]!r}"


def plugin_fault(entry: Entry, doing: str, exc: BaseException, fix: str = "") -> PluginError:
    """`exc`, raised by a plugin's own code while trainkit was `doing` something with it, as one paragraph: which
    component, who registered it where, the line that raised and what it said, and the fix."""
    said = " ".join(str(exc).split())[:300]
    what = f"{type(exc).__name__}: {said}" if said else type(exc).__name__
    if isinstance(exc, SystemExit):
        what = f"sys.exit({exc.code!r}) (a component must raise an exception, not end the process)"
    return PluginError(f"{entry.described} failed while {doing}: {raised_at(exc, entry)}: {what}. "
                       f"{fix or 'Fix that line in the plugin'} (trainkit list shows where each component is "
                       f"registered).")


BLAME_ORDER = ("task", "model", "dataset", "optimizer", "scheduler", "tracker", "cluster environment")


def blame(exc: BaseException, doing: str) -> PluginError | None:
    """`exc` as a PluginError where a plugin's own code raised it (the deepest frame in a file that registered a
    component: that file's task, else model, dataset, ...), for code that runs components it did not build (the loop:
    a plugin's train_step). None where no plugin is in the traceback: trainkit's or torch's own, left as it is."""
    by_file: dict[str, list[Entry]] = {}
    for registry in REGISTRIES.values():
        for entry in registry._entries.values():  # not `entries`: nothing is imported to find out
            if entry.plugin:
                by_file.setdefault(entry.where.rpartition(":")[0], []).append(entry)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        found = by_file.get(frame.filename)
        if found:
            entry = min(found, key=lambda e: BLAME_ORDER.index(e.kind) if e.kind in BLAME_ORDER else len(BLAME_ORDER))
            return plugin_fault(entry, doing, exc)
    return None


def load_entry_points() -> None:
    """Installed packages that declare an entry point in the `trainkit.plugins` group, loaded once per process: the
    entry point names a module (imported) or a function (imported and called)."""
    global _ENTRY_POINTS_READ
    if _ENTRY_POINTS_READ:
        return
    _ENTRY_POINTS_READ = True
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        how = f"entry point {point.name} of {point.dist.name if point.dist else 'an installed package'}: "
        try:
            loaded = point.load()
            if callable(loaded) and not inspect.isclass(loaded) and not inspect.ismodule(loaded):
                loaded()
        except PluginError:
            raise
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            raise PluginError(_import_failure(point.value, how, exc)) from None
        LOADED[point.module] = how


def plugins_arg(args: list[str]) -> list[str]:
    """The modules a command line's `plugins=[a,b]` (or `plugins=a`, `+plugins=...`) names."""
    modules: list[str] = []
    for arg in args:
        key, eq, value = arg.lstrip("+~").partition("=")
        if key == "plugins" and eq:
            modules += [m.strip().strip("'\"") for m in value.strip("[]").split(",") if m.strip()]
    return modules


def origins(names: dict[str, Any]) -> dict[str, str]:
    """{kind: plugin module} for the components a run chose that plugins registered (stored in its checkpoints)."""
    found = {}
    for kind, name in names.items():
        entry = REGISTRIES[kind].entries.get(name) if isinstance(name, str) else None
        if entry is not None and entry.plugin:
            found[kind] = entry.origin
    return found


def listing() -> list[tuple[str, str, str, str]]:
    """(kind, name, origin, where) for every registered component, built-ins first, for `trainkit list`."""
    rows = []
    for registry in REGISTRIES.values():
        for entry in registry.entries.values():
            where = entry.target if isinstance(entry.target, str) else (
                f"{_defined_at(entry.target, entry.where)} ({os.path.relpath(entry.where)})")
            rows.append((registry.kind, entry.name, entry.origin, where))
    return rows


# What trainkit passes a component itself, where its signature has the name: never a config key.
GIVEN = ("in_shape", "num_outputs", "meta", "from_checkpoint", "params", "optimizer", "splits", "seed", "total_steps",
         "steps_per_epoch", "monitor_mode", "examples", "run")


def call_with(fn: Any, kwargs: dict[str, Any], key: str, what: str, given: dict[str, Any] | None = None) -> Any:
    """`fn(**given, **kwargs)`: `kwargs` are a config section's keys (`key`.NAME), `given` what trainkit passes itself.
    An unknown key, a key that trainkit sets itself, or a value of another type than its parameter's becomes an
    error that names the key and lists the settings of `what`."""
    given = given or {}
    check_keys(fn, kwargs, key, what, given)
    return fn(**given, **kwargs)


def check_keys(fn: Any, kwargs: dict[str, Any], key: str, what: str, given: dict[str, Any] | None = None) -> None:
    """What call_with checks before it calls: every key a setting of `fn`, every value of its parameter's type."""
    given = given or {}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable whose signature Python cannot read: it checks its keys itself
        return
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in kwargs if (k not in params and not takes_any) or k in given)
    if unknown:
        known = ", ".join(p for p, v in params.items() if p not in GIVEN and p not in given
                          and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD))
        raise ConfigError(f"{', '.join(f'{key}.{k}' for k in unknown)} is not a setting of {what}; its settings are: "
                          f"{known or 'none'}.")
    for name, value in kwargs.items():
        expected = _expected_type(params[name], value) if name in params else None
        if expected:
            default = params[name].default
            said = "it has no default" if default is inspect.Parameter.empty else f"its default is {_shown(default)}"
            raise ConfigError(f"{key}.{name}={_shown(value)} is not {expected}, as {what} needs ({said}).")


def _expected_type(param: inspect.Parameter, value: Any) -> str | None:
    """What `value` should be, judged by the parameter's annotation (else its default); None when it fits or
    nothing is known. torch annotates `momentum: float = 0`: the annotation, not the default, says float."""
    hint = "" if param.annotation is inspect.Parameter.empty else str(param.annotation)
    default = param.default
    if value is None:
        return None if "None" in hint or "Optional" in hint or default is None else "given (null is not allowed)"
    if not hint:
        hint = type(default).__name__ if default not in (inspect.Parameter.empty, None) else ""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if "Sequence" in hint or "Iterable" in hint or "list" in hint or "tuple" in hint:
        return None if isinstance(value, (list, tuple)) or (number and "float |" in hint) else "a list"
    if "float" in hint:
        return None if number else "a number"
    if "int" in hint:
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if "bool" in hint:
        return None if isinstance(value, bool) else "true or false"
    if "str" in hint:
        return None if isinstance(value, str) else "a word"
    return None


def _shown(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


# The keys every dataset's config has, with their defaults: read by the batch loader and the trainer, never passed to
# the dataset's function, so a plugin's dataset without a YAML file takes `data.batch_size=32` like a built-in.
DATASET_KEYS: dict[str, Any] = {"batch_size": 64, "augment": {"crop_padding": 0, "hflip": False}, "on_device": True,
                                "allow_missing_classes": False}

# Keyword arguments that say how torch runs, not what is learned: left out of a generated option's keys.
MECHANICS = {"foreach", "differentiable", "capturable", "fused", "maximize", "last_epoch", "verbose"}


def option_node(entry: Entry) -> dict[str, Any]:
    """The config group option of a component that has no YAML file: `name` and its keyword arguments with their
    defaults (`???`, required, where it has none), so `model=my_net model.width=32` works without writing one. A
    tracker's option is `{NAME: {its keys}}`: several trackers merge into one `logger` section."""
    node: dict[str, Any] = {"name": entry.name} if entry.kind != "tracker" else {}
    try:
        params = list(inspect.signature(entry.load()).parameters.values())
    except (TypeError, ValueError):  # a callable whose signature Python cannot read: its keys are typed as given
        params = []
    skip = {"task": 2, "tracker": 1}.get(entry.kind, 0)  # a task's model and DataMeta; a tracker's TrackerRun
    for param in params[skip:]:
        if param.name in GIVEN or param.name in MECHANICS or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = param.default
        if default is param.empty:
            node[param.name] = "???"
        elif default is None or isinstance(default, (bool, int, float, str)):
            node[param.name] = default
        elif isinstance(default, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in default):
            node[param.name] = list(default)
    if entry.kind == "dataset":
        for key, default in DATASET_KEYS.items():
            node.setdefault(key, dict(default) if isinstance(default, dict) else default)
    return {entry.name: node} if entry.kind == "tracker" else node


def _defined_at(obj: Any, fallback: str) -> str:
    name = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"
    return name if name != "?.?" else fallback


# --- trainkit's own components ------------------------------------------------------------------------------------
def _builtin(registry: Registry, name: str, target: str, **options: Any) -> None:
    registry.add(name, target, BUILTIN, f"trainkit.registry ({target})", **options)


for _name, _target, _options in [
    ("mlp", "trainkit.models.mlp:MLP", {}),
    ("cnn", "trainkit.models.cnn:CNN", {}),
    ("fast_resnet", "trainkit.models.fast_resnet:FastResNet", {}),
    ("gan", "trainkit.tasks.gan:build_gan", {"task": "gan"}),
    ("torchvision", "trainkit.models.torchvision:TorchvisionNet", {}),
]:
    _builtin(MODELS, _name, _target, **_options)
for _name, _target, _options in [
    ("mnist_csv", "trainkit.data.mnist_csv:load", {"inputs": "trainkit.data.mnist_csv:PixelRowInputs"}),
    ("cifar10", "trainkit.data.cifar10:load", {}),
    ("synthetic_regression", "trainkit.data.synthetic:load", {}),
    ("curves", "trainkit.data.curves:load", {}),
    ("image_folder", "trainkit.data.image_folder:load", {"inputs": "trainkit.data.image_folder:FolderInputs"}),
    ("torchvision", "trainkit.data.torchvision_sets:load", {}),
    ("hf", "trainkit.data.hf:load", {"inputs": "trainkit.data.hf:new_inputs"}),
]:
    _builtin(DATASETS, _name, _target, **_options)
for _name, _target in [
    ("classification", "trainkit.tasks.classification:ClassificationTask"),
    ("regression", "trainkit.tasks.regression:RegressionTask"),
    ("gan", "trainkit.tasks.gan:GANTask"),
]:
    _builtin(TASKS, _name, _target)
# Every torch optimizer that steps without a closure, by its class name in lower case (LBFGS needs a closure,
# SparseAdam sparse gradients, Muon only 2-D weights: every model has biases); configs/optimizer/ holds one file per
# name with torch's defaults.
for _name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "Adadelta", "ASGD", "NAdam", "RAdam", "Rprop",
              "Adafactor"):
    _builtin(OPTIMIZERS, _name.lower(), f"torch.optim:{_name}")
# trainkit's schedulers count in epochs and know the run's length (configs/scheduler/, engine/schedulers.py); any
# other class of torch.optim.lr_scheduler by its own name, counting in optimizer updates, as torch does.
for _name in ("none", "step", "cosine", "onecycle", "plateau"):
    _builtin(SCHEDULERS, _name, f"trainkit.engine.schedulers:{_name}")
for _name in ("StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR", "PolynomialLR", "CosineAnnealingLR",
              "CosineAnnealingWarmRestarts", "CyclicLR", "OneCycleLR", "ReduceLROnPlateau"):
    _builtin(SCHEDULERS, _name, f"torch.optim.lr_scheduler:{_name}")
del _name, _target, _options

