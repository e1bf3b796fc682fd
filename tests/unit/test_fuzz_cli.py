"""Fuzzing the command line's doors, in this process through trainkit.cli.main (the real CLI's code, without a
subprocess per case): what a user types, the `_target_`s a config may hide (on the line, in --config-dir files, in a
sweep directory's multirun.yaml), damaged and hand-edited sweep directories given to `trainkit sweep resume`, search
and launcher settings, and output paths that cannot be run directories.

Each case must end in a correct result or in one paragraph: exit 1 or 2, `error:` on standard error, no traceback;
never exit 0 on nonsense, never import code a config names, never leave a folder it made, never hang (each case runs
under an alarm). Hydra lines get --check (compose and check, run nothing) where running is not the point. Seeded, like
test_fuzz.py: the `trainkit` profile derandomizes; `--hypothesis-profile=long` explores 20 times as many cases.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml
from fuzzing import bounded, examples
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz import MUTATIONS, mutate

from trainkit import cli
from trainkit.commands import sweep as sweep_command

CASE_SECONDS = 30  # far above any case's time (a case is 0.1-1 s): one that takes this long is hanging
MARKER_MODULE = "fuzz_cli_marker"  # imported only if a config made trainkit import what it names
EVIL = [f"{MARKER_MODULE}.evil", "builtins.print", "os.system", "subprocess.Popen", "builtins.exec", "pathlib.Path"]




@dataclass
class Said:
    code: int
    out: str
    err: str




def trainkit(*args: str, ascii_terminal: bool = False) -> Said:
    """`trainkit ARGS` in this process (the working directory is the case's): its exit code, stdout and stderr."""
    from hydra.core.global_hydra import GlobalHydra

    root = logging.getLogger()
    handlers, level, argv = list(root.handlers), root.level, list(sys.argv)
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii") if ascii_terminal else io.StringIO()
    err = io.TextIOWrapper(io.BytesIO(), encoding="ascii") if ascii_terminal else io.StringIO()
    GlobalHydra.instance().clear()
    try:
        with bounded(CASE_SECONDS), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            try:
                code = cli.main(list(args))
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
        # Hydra turns an exception in a callback into a warning on the console: an error said in no paragraph.
        hidden = [str(w.message) for w in warned if "raised" in str(w.message) and "Callback" in str(w.message)]
        assert not hidden, hidden
    finally:
        GlobalHydra.instance().clear()
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:], sys.argv = handlers, argv
        root.setLevel(level)
    texts = []
    for stream in (out, err):
        if isinstance(stream, io.TextIOWrapper):
            stream.flush()
            texts.append(stream.buffer.getvalue().decode("ascii"))  # an ASCII terminal got only ASCII
        else:
            texts.append(stream.getvalue())
    return Said(code, *texts)


def assert_contract(said: Said, ok: bool | None = None) -> None:
    """A correct result, or one paragraph: exit 1 or 2, `error:` on standard error, no traceback. `ok` True/False:
    the case must succeed / must be refused; None: either."""
    assert "Traceback" not in said.out + said.err, said.err
    assert "HYDRA_FULL_ERROR" not in said.err, said.err
    if said.code == 0:
        assert ok is not False, f"exit 0 on nonsense:\n{said.out}\n{said.err}"
        return
    assert ok is not True, f"refused a good case:\n{said.err}"
    assert said.code in (1, 2), (said.code, said.err)
    errors = [line for line in said.err.splitlines() if line.startswith("error:")]
    assert errors and all(len(e) > 20 for e in errors), said.err


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def case_dir(tmp_path_factory, monkeypatch):
    """A fresh working directory per hypothesis example, with the marker module importable from it."""
    made = []

    def fresh() -> Path:
        folder = tmp_path_factory.mktemp("case")
        (folder / f"{MARKER_MODULE}.py").write_text(
            "import pathlib\npathlib.Path(__file__).with_name('IMPORTED').write_text('yes')\n\n"
            "def evil(*a, **k):\n    return None\n")
        os.chdir(folder)
        made.append(folder)
        return folder

    monkeypatch.chdir(tmp_path_factory.getbasetemp())
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path_factory.getbasetemp()))
    yield fresh
    sys.modules.pop(MARKER_MODULE, None)


def assert_not_imported(folder: Path) -> None:
    assert MARKER_MODULE not in sys.modules and not (folder / "IMPORTED").exists(), "a config made trainkit import code"


# --- the command line -------------------------------------------------------------------------------------------

FLAGS = ["-m", "--multirun", "--cfg", "job", "--info", "--config-path", "x", "-cn", "eval", "--experimental-rerun",
         "f.pickle", "--config-dir", "nowhere", "-sc", "--hydra-help", "-p", "trainer", "--resolve", "--bogus"]
WORDS = ["seed=1", "seed=1,2", "seed=-1", "seed=x", "model=nope", "model=cnn", "=", "+", "~seed", "+seed=3", "++x=1",
         "hydra.mode=MULTIRUN", "hydra.run.dir=afile", "hydra.sweep.dir=afile/s", "é=1", "x='é'", "a b",
         "trainer.max_epochs=0", "optimizer.lr=interval(0,1)", "seed=range(3,1)", "plugins=[no_such_module]",
         "plugins=[os.path]", "data=mnist_csv", "hparams_search=regression_optuna", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=0", "scheduler=step", "scheduler.step_size=0", "ckpt=missing.ckpt", "input=x.csv",
         "resume=nowhere", "hydra.job.env_set.PYTHONPATH=/tmp", "seed=glob(*)",
         f"hydra.searchpath=[pkg://{MARKER_MODULE}]", "hydra.searchpath=[file://nowhere]", "key=${oc.env:HOME}", "'"]
COMMANDS = ["train", "eval", "predict", "export", "sample", "data check", "runs", "list", "sweep resume", "fly", ""]


@examples(150)
@given(command=st.sampled_from(COMMANDS),
       words=st.lists(st.one_of(st.sampled_from(FLAGS + WORDS), st.text(max_size=6)), max_size=5),
       ascii_terminal=st.booleans())
def test_any_command_line_works_or_is_refused_in_one_paragraph(case_dir, command, words, ascii_terminal):
    folder = case_dir()
    (folder / "afile").write_text("")
    before = tree(folder)
    hydra_command = command in ("train", "eval", "predict", "export", "sample", "data check")
    args = [*command.split(), *words, *(["--check"] if hydra_command else [])]  # checked, never run
    said = trainkit(*args, ascii_terminal=ascii_terminal)
    if not command.split():
        said.code = 0 if said.code == 0 else said.code  # `trainkit` alone prints its usage
    if command == "fly":
        assert said.code == 2 and said.err.startswith("error: unknown command 'fly'")
        return
    assert_contract(said)
    assert_not_imported(folder)
    assert tree(folder) == before, tree(folder) ^ before  # --check writes nothing; refusals leave nothing


# --- _target_ wherever a config can hide one ----------------------------------------------------------------------

# (where under hydra., the keys of the line's override, or of a YAML file's mapping): each is a place where Hydra or
# Python's logging would import what it names.
PLACES = [
    ("callbacks", "x", "_target_"),
    ("callbacks", "sweep_summary", "_target_"),
    ("sweeper", "_target_"),
    ("launcher", "_target_"),
    ("launcher", "additional_parameters", "x", "_target_"),
    ("job_logging", "handlers", "x", "class"),
    ("job_logging", "handlers", "x", "()"),
    ("job_logging", "formatters", "simple", "()"),
    ("job_logging", "handlers", "console", "stream"),
    ("hydra_logging", "filters", "x", "()"),
]
SHIPPED = {("callbacks", "sweep_summary", "_target_"): "trainkit.cli.sweep_callback.SweepSummary",
           ("launcher", "_target_"): "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
           ("job_logging", "handlers", "console", "stream"): "ext://sys.stdout",
           ("job_logging", "handlers", "x", "class"): "logging.StreamHandler"}


def _nest(path: tuple[str, ...], value: object) -> dict:
    node: object = value
    for key in reversed(path):
        node = {key: node}
    return node  # type: ignore[return-value]


@examples(100)
@given(place=st.sampled_from(PLACES), value=st.sampled_from([*EVIL, "shipped", "ext://fuzz_cli_marker.x"]),
       door=st.sampled_from(["line", "config dir", "sweep task", "search hydra"]), slurm=st.booleans())
def test_no_config_makes_trainkit_import_code(case_dir, monkeypatch, place, value, door, slurm):
    folder = case_dir()
    shipped = value == "shipped"
    value = SHIPPED.get(place, EVIL[0]) if shipped else value
    launcher = ["hydra/launcher=slurm"] * (slurm and place[0] == "launcher")
    key = ".".join(("hydra", *place))
    line = [*launcher, f"+{key}={value}" if place not in SHIPPED and place[-1] != "()" else f"{key}={value}"]
    if door == "line":
        said = trainkit("train", *line, "--check")
    elif door == "config dir":
        mine = folder / "mine" / "experiment"
        mine.mkdir(parents=True)
        (mine / "x.yaml").write_text("# @package _global_\n" + yaml.safe_dump(_nest(("hydra", *place), value)))
        said = trainkit("train", "--config-dir", str(folder / "mine"), *launcher, "experiment=x", "--check")
    else:  # a sweep directory someone else wrote, resumed: what it stores is replayed
        sweep = folder / "sweep"
        sweep.mkdir()
        search = door == "search hydra"
        hydra = {"overrides": {"task": ["seed=1,2"] if not search else ["seed=choice(1,2)"],
                               "hydra": line if search else []}}
        if search:
            hydra["sweeper"] = {"_target_": "hydra_plugins.trainkit_optuna.OptunaSweeper"}
            hydra["overrides"]["task"].append("hydra/sweeper=optuna")
        else:
            hydra["overrides"]["task"] += line
        (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
        monkeypatch.setattr(sweep_command, "check_line", lambda args: _paragraph(trainkit("train", *args, "--check")))
        monkeypatch.setattr(sweep_command, "run_line", lambda args: _job("train", *args, "--check"))
        said = trainkit("sweep", "resume", str(sweep))
    assert_contract(said, ok=False if not shipped else None)
    assert_not_imported(folder)
    assert not (folder / "outputs").exists()


def _paragraph(said: Said) -> str | None:
    return None if said.code == 0 else said.err.removeprefix("error: ")


def _job(*args: str) -> int:
    """A sweep job `trainkit ARGS` as `sweep resume` runs it: its output on this one's streams, its exit code."""
    said = trainkit(*args)
    sys.stdout.write(said.out)
    sys.stderr.write(said.err)
    return said.code


# --- damaged and hand-edited sweep directories --------------------------------------------------------------------

def fake_train(cfg, ctx) -> dict:
    """`train` without torch: a run that finishes at once, val/loss = seed / 10."""
    summary = {"status": "finished", "epochs": 1, "steps": 1, "monitor": "val/loss", "monitor_mode": "min",
               "best_epoch": 1, "best_value": cfg.seed / 10, "final": {"epoch": 1, "val/loss": cfg.seed / 10},
               "best": {"epoch": 1, "val/loss": cfg.seed / 10}, "test": {}, "wall_time_s": 0.1}
    (ctx.run_dir / "summary.json").write_text(json.dumps(summary))
    return summary


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """A finished grid sweep and a finished search, made once by the real CLI with `train` replaced by fake_train."""
    root = tmp_path_factory.mktemp("sweeps")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setitem(cli.COMMANDS, "train", replace(cli.COMMANDS["train"], target="test_fuzz_cli:fake_train"))
        assert trainkit("train", "-m", "seed=3,4,5", "hydra.sweep.dir=grid").code == 0
        assert trainkit("train", "-m", "hydra/sweeper=optuna", "seed=choice(1,2,3)", "hydra.sweeper.n_trials=2",
                        "hydra.sweeper.n_jobs=1", "hydra.sweep.dir=search").code == 0
    return root


def _files(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.rglob("*") if p.is_file() and p.suffix in (".yaml", ".json", ".csv", ".db"))


EDITS = ["mutate", "truncate", "delete", "empty", "yaml of another shape", "a directory", "other overrides"]


@examples(50)
@given(kind=st.sampled_from(["grid", "grid", "grid", "search"]), which=st.integers(0, 10**6), edit=st.sampled_from(EDITS),
       mutations=MUTATIONS, where=st.integers(0, 10**6), retry=st.booleans(),
       doc=st.sampled_from([[], {}, "x", 3, {"hydra": []}, {"hydra": {"overrides": {"task": 7}}},
                            {"hydra": {"sweeper": "x"}}, {"status": "[red]x"}, {"best_value": 10**400}, ["seed=1"]]))
def test_sweep_resume_of_a_damaged_directory_finishes_or_refuses_cleanly(case_dir, monkeypatch, sweeps, kind, which,
                                                                          edit, mutations, where, retry, doc):
    folder = case_dir()
    sweep = folder / kind
    shutil.copytree(sweeps / kind, sweep)
    target = _files(sweep)[which % len(_files(sweep))]
    if edit == "mutate":
        target.write_bytes(mutate(target.read_bytes(), mutations))
    elif edit == "truncate":
        target.write_bytes(target.read_bytes()[: where % (target.stat().st_size + 1)])
    elif edit == "delete":
        target.unlink()
    elif edit == "empty":
        target.write_bytes(b"")
    elif edit == "a directory":
        target.unlink()
        target.mkdir()
    elif edit == "other overrides":
        target.write_text(yaml.safe_dump(["seed=9", "model=cnn"]))
    else:
        target.write_text(yaml.safe_dump(doc) if target.suffix != ".json" else json.dumps(doc))
    monkeypatch.setitem(cli.COMMANDS, "train", replace(cli.COMMANDS["train"], target="test_fuzz_cli:fake_train"))
    monkeypatch.setattr(sweep_command, "check_line", lambda args: _paragraph(trainkit("train", *args, "--check")))
    # A job runs as `trainkit train` would, in this process (fake_train): a search opens its study for real.
    monkeypatch.setattr(sweep_command, "run_line", lambda args: _job("train", *args))
    said = trainkit("sweep", "resume", str(sweep), *(["--retry-failed"] * retry))
    damaged_plan = target.name == "multirun.yaml" and edit in ("delete", "empty", "a directory", "other overrides")
    assert_contract(said, ok=False if damaged_plan else None)
    assert not (folder / "outputs").exists()


# --- search and launcher settings ---------------------------------------------------------------------------------

NUMBERS = st.one_of(st.integers(-3, 30), st.sampled_from([None, True, 1.5, "x", 0]))


def _shown(value: object) -> str:
    return {None: "null", True: "true", False: "false"}.get(value, str(value)) if not isinstance(value, float) \
        else repr(value)


@examples(100)
@given(n_trials=NUMBERS, n_jobs=NUMBERS, direction=st.sampled_from(["minimize", "maximize", "up", "MAXIMIZE", "null"]),
       sampler=st.sampled_from(["tpe", "random", "qmc", "foo", "null", "tpe-seed-x"]),
       low=st.sampled_from([-1.0, 0.0, 1e-4, 0.01, 0.1, 1.0]), high=st.sampled_from([-1.0, 0.0, 1e-4, 0.01, 0.1, 1.0]),
       log=st.booleans(), joblib=st.one_of(st.none(), NUMBERS), empty_range=st.booleans())
def test_search_and_launcher_settings_run_only_when_they_can(case_dir, n_trials, n_jobs, direction, sampler, low,
                                                             high, log, joblib, empty_range):
    case_dir()
    space = f"interval({low},{high})" if not log else f"tag(log,interval({low},{high}))"
    args = ["train", "-m", "hydra/sweeper=optuna", f"optimizer.lr={space}",
            "seed=range(3,1)" if empty_range else "seed=choice(1,2)", f"hydra.sweeper.n_trials={_shown(n_trials)}",
            f"hydra.sweeper.n_jobs={_shown(n_jobs)}", f"hydra.sweeper.direction={direction}"]
    if sampler == "tpe-seed-x":
        args += ["hydra.sweeper.sampler.name=tpe", "hydra.sweeper.sampler.seed=x"]
    else:
        args += [f"hydra.sweeper.sampler.name={sampler}"]
    if joblib is not None:
        args += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={_shown(joblib)}"]
    whole = lambda v, at_least: isinstance(v, int) and not isinstance(v, bool) and v >= at_least
    good = (whole(n_trials, 1) and whole(n_jobs, 1) and direction in ("minimize", "maximize")
            and sampler in ("tpe", "random", "qmc") and low < high and (not log or low > 0)
            and (joblib is None or (isinstance(joblib, int) and not isinstance(joblib, bool) and joblib != 0))
            and not empty_range and low >= 0)  # optimizer.lr < 0 is refused by Adam (each job's own check)
    said = trainkit(*args, "--check")
    assert_contract(said, ok=good)


# --- output paths -------------------------------------------------------------------------------------------------

PARTS = ["a", "'é'", "n" * 300, "afile", "existing", ".", "x y", "read_only"]


@pytest.fixture(scope="module")
def refusing_sbatch(tmp_path_factory) -> str:
    """A PATH whose `sbatch` refuses every job, as a cluster does that lacks what the job asks for."""
    folder = tmp_path_factory.mktemp("bin")
    (folder / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Requested node "
                                   "configuration is not available' >&2\nexit 1\n")
    (folder / "sbatch").chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


@examples(30)
@given(parts=st.lists(st.sampled_from(PARTS), min_size=1, max_size=3), sweep=st.booleans(),
       command=st.sampled_from(["eval", "predict"]), ascii_terminal=st.booleans())
def test_an_output_path_that_cannot_be_used_is_named_and_nothing_is_left(case_dir, monkeypatch, refusing_sbatch,
                                                                         parts, sweep, command, ascii_terminal):
    """A single run refused after its run directory was claimed (its checkpoint is missing), or a sweep refused after
    its directory was claimed (sbatch says no): the path's own problem or that refusal, and the tree as before."""
    folder = case_dir()
    (folder / "afile").write_text("")
    (folder / "existing").mkdir()
    (folder / "existing" / "mine.txt").write_text("the user's")
    (folder / "read_only").mkdir(mode=0o555)
    before = tree(folder)
    path = "/".join(parts)
    if any(" " in p for p in parts) or "'" in path:
        path = "'" + path.replace("'", "") + "'"
    if sweep:
        monkeypatch.setenv("PATH", refusing_sbatch)
        args = ["train", "-m", "hydra/launcher=slurm", "seed=1,2", f"hydra.sweep.dir={path}"]
    else:
        args = [command, "ckpt=missing.ckpt", "input=x.csv", f"hydra.run.dir={path}"]
    said = trainkit(*args, ascii_terminal=ascii_terminal)
    assert_contract(said, ok=False)  # every case is refused: by its path, its checkpoint or sbatch
    (folder / "read_only").chmod(0o755)
    assert tree(folder) == before, tree(folder) ^ before


# --- the Python API's in-process runner ---------------------------------------------------------------------------

@examples(60)
@given(name=st.sampled_from(["eval", "eval", "predict", "predict", "export", "sample", "train -m", "runs", "nope"]),
       words=st.lists(st.one_of(st.sampled_from(WORDS + ["-m", "--cfg"]), st.text(max_size=6)), max_size=4))
def test_the_python_api_returns_or_raises_trainkits_error_and_leaves_nothing(case_dir, name, words):
    """trainkit.api.run(NAME, OVERRIDES) (what trainkit.train runs): refused lines raise UserError with the paragraph,
    never another exception, and leave nothing behind. The checkpoint is missing, so nothing here runs for long."""
    from trainkit.cli import inprocess
    from trainkit.errors import UserError

    folder = case_dir()
    (folder / "afile").write_text("")
    before = tree(folder)
    with bounded(CASE_SECONDS):
        try:
            base = ["ckpt=missing.ckpt", *(["input=x.csv"] * (name == "predict"))]
            inprocess.run(name, [*base, *words])
            raise AssertionError("a line with a missing checkpoint ran")
        except UserError as err:
            assert str(err).strip() and "Traceback" not in str(err)
    assert_not_imported(folder)
    assert tree(folder) == before, tree(folder) ^ before
