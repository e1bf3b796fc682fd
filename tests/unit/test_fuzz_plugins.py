"""Fuzzing the plugin door: generated plugin modules, each broken in one of the ways a user's own code breaks (a model
whose constructor asserts, whose forward raises or returns integers or the wrong shape, a "model" that is no
nn.Module, a task without the protocol, an optimizer or scheduler factory that returns junk, a dataset that raises,
returns nothing, an empty training split, labels out of range, negative, fractional, strings or NaN, samples of
another shape or NaN, a DataMeta that cannot size a model; a module that exits or is interrupted at import), mixed
with healthy plugin and built-in components, through the entry points a user has: `trainkit.train` (the command
line's path, in this process), `trainkit.make_trainer`, and build.preflight + build.build_trainer.

Each case ends in a trained-or-built run, or in trainkit's own error (a UserError) with a one-paragraph message that
names the plugin module at fault: never another exception, never a hang (an alarm), no run directory left behind.
Seeded (the `trainkit` profile derandomizes): about 150 cases, 20-40 s on a laptop core.
"""

from __future__ import annotations

import itertools
import json
import sys
import textwrap
from pathlib import Path

import pytest
from fuzzing import bounded, examples
from hypothesis import given
from hypothesis import strategies as st

from trainkit.errors import UserError

CASE_SECONDS = 10  # far above any case's time (a case trains at most one epoch of 64 samples): a hang
TRAINER = {"max_epochs": 1, "progress": "none", "tensorboard": False, "device": "cpu", "log_every_n_steps": 1}
NAMES = (f"fz{i}" for i in itertools.count())  # one module per case: components never clash across cases




@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    """Where the generated modules are written and every case runs; the registries, loaded modules and sys.path as
    they were afterwards (the own_registry pattern of tests/e2e/test_plugins.py, for a whole module of cases)."""
    import os

    from trainkit import registry

    where = tmp_path_factory.mktemp("plugins")
    saved = {kind: dict(r.entries) for kind, r in registry.REGISTRIES.items()}
    loaded, modules, path, cwd = dict(registry.LOADED), set(sys.modules), list(sys.path), os.getcwd()
    os.chdir(where)
    yield where
    os.chdir(cwd)
    for kind, entries in saved.items():
        registry.REGISTRIES[kind].entries.clear()
        registry.REGISTRIES[kind].entries.update(entries)
    registry.LOADED.clear()
    registry.LOADED.update(loaded)
    for name in set(sys.modules) - modules:
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(where)):
            del sys.modules[name]
    sys.path[:] = path


# --- the generated modules -------------------------------------------------------------------------------------

HEADER = '''
import math
import sys

import numpy as np
import torch
from torch import nn

import trainkit
from trainkit.data.base import DataMeta, DataSplits, Split
from trainkit.tasks.classification import ClassificationTask
'''

# A healthy dataset and model of the module's own (MOD is replaced by the module's name): the broken part is mixed
# with these or with trainkit's built-ins.
GOOD_DATA = '''
@trainkit.register_dataset("MOD_data")
def MOD_data(splits, n: int = 48, classes: int = 3):
    g = torch.Generator().manual_seed(0)
    def draw(count):
        y = torch.arange(count) % classes
        return Split(torch.randn(count, 2, generator=g) + y[:, None].float(), Y_OF(y))
    return DataSplits(draw(n), draw(n // 2), draw(n // 2), META)
'''
GOOD_META = 'DataMeta(name="MOD_data", kind="classification", in_shape=(2,), num_outputs=classes)'
GOOD_MODEL = '''
@trainkit.register_model("MOD_net")
class MOD_net(nn.Module):
    def __init__(self, in_shape, num_outputs, width: int = 8):
        super().__init__()
        INIT
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width), nn.ReLU(),
                                  nn.Linear(width, num_outputs))

    def forward(self, x):
        return FORWARD
'''
EXCEPTIONS = ["AssertionError('width must be even')", "RuntimeError('CUDA driver missing')", "ValueError('bad')",
              "KeyError('col')", "AttributeError('no attribute w')", "ZeroDivisionError('division by zero')",
              "TypeError('unsupported operand')", "IndexError('list index out of range')", "SystemExit(3)",
              "NotImplementedError('todo')", "ImportError('no module named cv2')", "OSError(5, 'I/O error')"]


def dataset(y_of: str = "y", meta: str = GOOD_META) -> str:
    return GOOD_DATA.replace("Y_OF(y)", y_of).replace("META", meta)


def model(init: str = "pass", forward: str = "self.body(x)") -> str:
    return GOOD_MODEL.replace("INIT", init).replace("FORWARD", forward)


class Case:
    """One generated module: its source, what it chooses (make_trainer's keyword arguments), and whether a healthy
    run is expected ('ok') or the plugin is at fault ('fault')."""

    def __init__(self, source: str, choice: dict, expect: str = "fault", import_fails: bool = False) -> None:
        self.source, self.choice, self.expect, self.import_fails = source, choice, expect, import_fails

    def __repr__(self) -> str:  # hypothesis prints a failing case: its module says it all
        return f"Case(expect={self.expect}, choice={self.choice})\n{self.source}"


INTEGER_OUTPUTS = ["self.body(x).long()", "self.body(x).round().int()",
                   "self.body(x).argmax(1, keepdim=True).expand(-1, self.body[-1].out_features)"]


def model_cases(draw, mod: str) -> Case:
    kind = draw(st.sampled_from(["init_raises", "forward_raises", "forward_ints", "wrong_shape", "not_module",
                                 "reads_values", "no_parameters", "returns_tuple"]))
    exc = draw(st.sampled_from(EXCEPTIONS))
    data = draw(st.sampled_from(["synthetic_regression", f"{mod}_data"]))
    body = {
        "init_raises": model(init=f"raise {exc}"),
        "forward_raises": model(forward=f"(_ for _ in ()).throw({exc})"),
        "forward_ints": model(forward=draw(st.sampled_from(INTEGER_OUTPUTS))),
        "wrong_shape": model(forward=f"self.body(x).repeat(1, {draw(st.integers(2, 4))})"),
        "not_module": f'''
@trainkit.register_model("{mod}_net")
def {mod}_net(in_shape, num_outputs):
    return {draw(st.sampled_from(["None", "lambda x: x", "42", "'a model'", "[nn.Linear(2, 2)]", "nn.Linear"]))}
''',
        # Reads a value while it is built or run: the meta device cannot tell, the CPU check does (healthy).
        "reads_values": model(init="self.k = int(torch.tensor(3).item())",
                              forward="self.body(x) * (1 + 0 * x.abs().sum().item())"),
        "no_parameters": f'''
@trainkit.register_model("{mod}_net")
def {mod}_net(in_shape, num_outputs):
    return nn.Flatten()
''',
        "returns_tuple": model(forward="(self.body(x), x)"),
    }[kind]
    expect = "ok" if kind == "reads_values" else "fault"
    return Case(dataset() + body, {"data": data, "model": f"{mod}_net"}, expect)


def data_cases(draw, mod: str) -> Case:
    kind = draw(st.sampled_from(["raises", "returns", "empty_train", "empty_val", "label_range", "label_negative",
                                 "label_fraction", "label_strings", "label_nan", "label_2d", "label_whole_floats",
                                 "x_strings", "x_nan", "x_shape", "meta_outputs", "meta_shape", "meta_scale",
                                 "meta_names", "meta_norm", "exits"]))
    classes = draw(st.integers(2, 4))
    good_meta = GOOD_META.replace("num_outputs=classes", f"num_outputs={classes}")
    y_of, meta, extra = "y", good_meta, ""
    if kind == "raises":
        extra = f'\n_original = {mod}_data\n\n@trainkit.register_dataset("{mod}_bad")\ndef {mod}_bad(splits):\n' \
                f'    raise {draw(st.sampled_from(EXCEPTIONS))}\n'
    elif kind == "exits":
        extra = f'\n@trainkit.register_dataset("{mod}_bad")\ndef {mod}_bad(splits):\n    sys.exit(0)\n'
    elif kind == "returns":
        junk = draw(st.sampled_from(["None", "(1, 2)", "{'train': None}", "[torch.zeros(2, 2)]",
                                     "DataSplits(None, None, None, None)"]))
        extra = f'\n@trainkit.register_dataset("{mod}_bad")\ndef {mod}_bad(splits):\n    return {junk}\n'
    elif kind in ("empty_train", "empty_val"):
        which = "train" if kind == "empty_train" else "val"
        extra = (f'\n@trainkit.register_dataset("{mod}_bad")\ndef {mod}_bad(splits):\n'
                 f'    d = {mod}_data(splits)\n    d.{which} = Split(d.{which}.x[:0], d.{which}.y[:0])\n    return d\n')
    else:
        y_of = {"label_range": f"torch.where(y == 0, y + {draw(st.integers(classes, 10**6))}, y)",
                "label_negative": f"torch.where(y == 1, y - {draw(st.integers(2, 1000))}, y)",
                "label_fraction": f"y.float() + {draw(st.sampled_from([0.5, 0.25, 0.999, 1e-3]))}",
                "label_strings": "np.array([str(v) for v in y.tolist()])",
                "label_nan": "torch.where(y == 1, float('nan'), y.float())",
                "label_2d": "y[:, None]",
                "label_whole_floats": "y.double().numpy()",
                }.get(kind, "y")
        outputs = draw(st.sampled_from(["0", "-1", "2.5", "None", "True"]))
        shape = draw(st.sampled_from(["(3,)", "(2, 1)", "()", "(0,)", "None", "(-2,)"]))
        scale = draw(st.sampled_from(["0.0", "-1", "float('nan')", "None"]))
        norm = draw(st.sampled_from(["mean=(0.1,)", "std=(0.0, 0.0)", "mean=(0.1, 0.2), std=(0.0, 1.0)",
                                     "mean=(1, 2, 3), std=(1, 2, 3)"]))
        meta = {"meta_outputs": good_meta.replace(f"num_outputs={classes}", f"num_outputs={outputs}"),
                "meta_shape": good_meta.replace("in_shape=(2,)", f"in_shape={shape}"),
                "meta_scale": good_meta[:-1] + f", scale={scale})",
                "meta_names": good_meta[:-1] + ", class_names=['one'])",
                "meta_norm": good_meta[:-1] + f", {norm})",
                }.get(kind, good_meta)
        if kind == "x_strings":
            extra = (f'\n@trainkit.register_dataset("{mod}_bad")\ndef {mod}_bad(splits):\n    d = {mod}_data(splits)\n'
                     f'    d.train = Split(np.array([["a", "b"]] * len(d.train)), d.train.y)\n    return d\n')
        elif kind == "x_nan":
            extra = (f'\n@trainkit.register_dataset("{mod}_bad")\ndef {mod}_bad(splits):\n    d = {mod}_data(splits)\n'
                     f'    d.train.x[3, 1] = float("{draw(st.sampled_from(["nan", "inf", "-inf"]))}")\n    return d\n')
        elif kind == "x_shape":
            extra = (f'\n@trainkit.register_dataset("{mod}_bad")\ndef {mod}_bad(splits):\n    d = {mod}_data(splits)\n'
                     f'    d.val = Split(d.val.x[:, :1], d.val.y)\n    return d\n')
    name = f"{mod}_bad" if extra else f"{mod}_data"
    expect = "ok" if kind == "label_whole_floats" else "fault"
    net = draw(st.sampled_from(["mlp", f"{mod}_net"]))
    return Case(dataset(y_of, meta) + model() + extra, {"data": name, "model": net}, expect)


def task_cases(draw, mod: str) -> Case:
    kind = draw(st.sampled_from(["missing", "init_raises", "monitor", "modules_junk", "params_empty", "step_raises"]))
    missing = draw(st.lists(st.sampled_from(["modules", "param_groups", "distribute", "train_step", "eval_step",
                                             "epoch_images"]), min_size=1, max_size=3, unique=True))
    if kind == "missing":
        methods = "".join(f"    def {m}(self, *args):\n        return {{}}\n" for m in
                          ("modules", "param_groups", "distribute", "train_step", "eval_step", "epoch_images")
                          if m not in missing)
        task = f'''
@trainkit.register_task("{mod}_task")
class {mod}_task:
    monitor, monitor_mode = "val/acc", "max"

    def __init__(self, net, meta):
        self.net, self.meta = net, meta

{methods}'''
    else:
        exc = draw(st.sampled_from(EXCEPTIONS))
        monitor = draw(st.sampled_from(['None, "max"', '"val/acc", "up"', "3, 4"]))
        body = {"init_raises": f"    def __init__(self, net, meta, gamma: float = 2.0):\n        raise {exc}\n",
                "monitor": f"    monitor, monitor_mode = {monitor}\n",
                "modules_junk": "    def modules(self):\n        return [self.net]\n",
                "params_empty": "    def param_groups(self):\n        return {}\n",
                "step_raises": f"    def train_step(self, batch, opt):\n        raise {exc}\n",
                }[kind]
        task = f'''
@trainkit.register_task("{mod}_task")
class {mod}_task(ClassificationTask):
{body}'''
    # step_raises fails inside the loop: the plugin's file in the traceback names it
    expect = "fault"
    return Case(dataset() + model() + task, {"data": f"{mod}_data", "model": draw(st.sampled_from(["mlp", f"{mod}_net"])),
                                           "task": f"{mod}_task"}, expect)


def optimizer_cases(draw, mod: str) -> Case:
    kind = draw(st.sampled_from(["opt_returns", "opt_raises", "sched_returns", "sched_raises", "sched_step_raises"]))
    junk = draw(st.sampled_from(["None", "42", "'adam'", "[torch.optim.SGD(params, lr=0.1)]", "params"]))
    exc = draw(st.sampled_from(EXCEPTIONS))
    source = {
        "opt_returns": f'@trainkit.register_optimizer("{mod}_opt")\ndef {mod}_opt(params, lr: float = 0.1):\n'
                       f'    params = list(params)\n    return {junk}\n',
        "opt_raises": f'@trainkit.register_optimizer("{mod}_opt")\ndef {mod}_opt(params, lr: float = 0.1):\n'
                      f'    raise {exc}\n',
        "sched_returns": f'@trainkit.register_scheduler("{mod}_sched")\ndef {mod}_sched(optimizer):\n'
                         f'    return {junk.replace("params", "optimizer")}\n',
        "sched_raises": f'@trainkit.register_scheduler("{mod}_sched")\ndef {mod}_sched(optimizer):\n    raise {exc}\n',
        "sched_step_raises": f'''
class Bad(torch.optim.lr_scheduler.LambdaLR):
    def step(self, *args):
        raise {exc}

@trainkit.register_scheduler("{mod}_sched")
def {mod}_sched(optimizer):
    return Bad(optimizer, lambda s: 1.0)
''',
    }[kind]
    choice = {"data": draw(st.sampled_from(["synthetic_regression", f"{mod}_data"])), "model": "mlp"}
    choice["optimizer" if kind.startswith("opt") else "scheduler"] = f"{mod}_opt" if kind.startswith("opt") \
        else f"{mod}_sched"
    if junk == "None" and kind == "sched_returns":  # a scheduler function may return None: a constant rate
        return Case(dataset() + source, choice, "ok")
    return Case(dataset() + source, choice)


def import_cases(draw, mod: str) -> Case:
    line = draw(st.sampled_from(["sys.exit(0)", "sys.exit(2)", "sys.exit('no GPU')", "raise SystemExit",
                                 "raise KeyboardInterrupt", "raise RuntimeError('no driver')", "import not_a_module_x",
                                 "def f(:", "trainkit.register_model('bad name', nn.Linear)",
                                 "trainkit.register_model('MOD_x', 42)", "exit()"]))
    return Case(dataset() + "\n" + line.replace("MOD", mod) + "\n", {"data": f"{mod}_data", "model": "mlp"},
                import_fails=True)


def healthy_cases(draw, mod: str) -> Case:
    return Case(dataset() + model(), {"data": draw(st.sampled_from([f"{mod}_data", "synthetic_regression"])),
                                      "model": draw(st.sampled_from(["mlp", f"{mod}_net"]))}, "ok")


FAMILIES = {"model": model_cases, "data": data_cases, "task": task_cases, "optimizer": optimizer_cases,
            "import": import_cases, "healthy": healthy_cases}


# --- the entry points ------------------------------------------------------------------------------------------

def through_train(mod: str, choice: dict, where: Path) -> None:
    overrides = [f"{'data' if k == 'data' else k}={v}" for k, v in choice.items()]
    from trainkit import train

    small = ["data.n_train=64", "data.n_val=32", "data.n_test=32"] if choice["data"] == "synthetic_regression" else []
    train([f"plugins=[{mod}]", *overrides, *small, *(f"trainer.{k}={str(v).lower() if isinstance(v, bool) else v}"
                                             for k, v in TRAINER.items()), "logger=[]", "data.batch_size=16"])


def through_make_trainer(mod: str, choice: dict, where: Path) -> None:
    from trainkit import make_trainer

    data = {"name": choice["data"], "batch_size": 16, **SMALL.get(choice["data"], {})}
    trainer = make_trainer(where / "outputs" / mod, **{**choice, "data": data}, trainer=TRAINER, logger={},
                           plugins=[mod])
    try:
        trainer.run()
    except UserError as err:  # a run that started and failed: its directory holds the failed summary, as any run's
        assert json.loads((where / "outputs" / mod / "summary.json").read_text())["status"] == "failed"
        err.started = True
        raise
    finally:
        trainer.close()


def through_build(mod: str, choice: dict, where: Path) -> None:
    from trainkit import registry
    from trainkit.build import build_trainer, preflight

    registry.load_plugins([mod])
    cfg = {"data": {"name": choice["data"], "batch_size": 16, **SMALL.get(choice["data"], {})}, "model": {"name": choice["model"]},
           "task": {"name": choice.get("task", "auto")}, "optimizer": {"name": choice.get("optimizer", "adam")},
           "scheduler": {"name": choice.get("scheduler", "none")}, "trainer": dict(TRAINER), "seed": 0, "logger": {}}
    preflight(cfg)
    trainer = build_trainer(cfg, where / "outputs" / mod)
    try:
        trainer.run()
    finally:
        trainer.close()


SMALL = {"synthetic_regression": {"n_train": 64, "n_val": 32, "n_test": 32}}
ENTRIES = {"train": through_train, "make_trainer": through_make_trainer, "build": through_build}


def check(case: Case, entry: str, mod: str, where: Path) -> str:
    (where / f"{mod}.py").write_text(textwrap.dedent(HEADER) + case.source.replace("MOD", mod))
    before = set((where / "outputs").rglob("*")) if (where / "outputs").exists() else set()
    with bounded(CASE_SECONDS):
        try:
            ENTRIES[entry](mod, case.choice, where)
        except UserError as err:
            said = str(err)
            assert said.strip() and "\n\n" not in said and "Traceback" not in said, said
            if case.expect == "ok":
                raise AssertionError(f"a healthy plugin was refused: {said}") from err
            assert mod in said, f"the message does not name the plugin module {mod}: {said}"
            if entry != "build" and not getattr(err, "started", False):  # build's caller claimed the directory
                left = [p for p in (where / "outputs").rglob("*") if p.is_file() and p not in before] \
                    if (where / "outputs").exists() else []
                assert not left, f"a refused run left {left[:3]}"
            return "refused"
    assert case.expect != "fault", "a broken plugin was accepted"
    return "ok"


@examples(120)
@given(data=st.data())
def test_broken_plugins_are_refused_in_one_paragraph_naming_them(plugin_dir, data):
    mod = next(NAMES)
    family = data.draw(st.sampled_from(sorted(FAMILIES)), label="family")
    case = FAMILIES[family](data.draw, mod)
    # the command line's path costs a Hydra compose: one case in seven takes it, the others the library's doors
    entry = data.draw(st.sampled_from(["train", "make_trainer", "make_trainer", "build", "build", "build", "build"]))
    check(case, entry, mod, plugin_dir)


def test_the_plugin_fuzz_reaches_both_outcomes(plugin_dir):
    """The fuzz above is no tautology: a healthy module trains, the same module broken is refused, by each door."""
    for entry in ENTRIES:
        healthy, broken = next(NAMES), next(NAMES)
        choice = {"data": "MOD_data", "model": "MOD_net"}
        assert check(Case(dataset() + model(), {k: v.replace("MOD", healthy) for k, v in choice.items()}, "ok"),
                     entry, healthy, plugin_dir) == "ok"
        assert check(Case(dataset() + model(init="assert False, 'width'"), {k: v.replace("MOD", broken)
                                                                           for k, v in choice.items()}),
                     entry, broken, plugin_dir) == "refused"
