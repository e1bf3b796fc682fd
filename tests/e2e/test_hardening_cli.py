"""The command line's hardening, through the real CLI: no config (a --config-dir file, a sweep directory, the line
itself) makes Hydra import code; a refused line leaves no folder it made; every exception reaches the user as one
paragraph; sweeps and searches are checked whole before a job starts; signals end every command within seconds.
The fuzzers of the same doors are tests/unit/test_fuzz_cli.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import TRAINKIT, run_cli

from trainkit import cli
from trainkit.cli.failure import explain_sbatch
from trainkit.errors import InternalError, UserError

TINY = ["trainer.max_epochs=1", "data.n_train=256", "trainer.tensorboard=false", "trainer.progress=none"]
# A module that says so when it is imported: the proof that no config made trainkit import it.
MARKER = 'import pathlib\npathlib.Path("IMPORTED").write_text("yes")\n\ndef evil(*a, **k):\n    return None\n'


def one_paragraph(proc: subprocess.CompletedProcess, code: int | tuple[int, ...] = (1, 2)) -> str:
    """The contract of a refused line: its exit code, `error:` on standard error, no traceback."""
    codes = (code,) if isinstance(code, int) else code
    assert proc.returncode in codes, proc.stdout + proc.stderr
    assert proc.stderr.lstrip().startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "HYDRA_FULL_ERROR" not in proc.stderr, proc.stderr
    return proc.stderr


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# --- 1. a config never chooses code -------------------------------------------------------------------------------

def test_a_target_typed_on_the_line_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "evil.py").write_text(MARKER)
    before = tree(tmp_path)
    said = one_paragraph(run_cli("train", "+hydra.callbacks.evil._target_=evil.evil", cwd=tmp_path, check=False))
    assert "hydra.callbacks.evil._target_=evil.evil: a config may not choose code" in said
    assert "plugins=[my_module]" in said
    assert not (tmp_path / "IMPORTED").exists() and tree(tmp_path) == before  # not imported, nothing made
    # The issue's own example, exactly: it used to print and exit 0.
    one_paragraph(run_cli("train", "+hydra.callbacks.evil._target_=builtins.print", cwd=tmp_path, check=False))
    # A search path in a package: Hydra imports the package to look in it.
    said = one_paragraph(run_cli("train", "hydra.searchpath=[pkg://evil]", cwd=tmp_path, check=False))
    assert "would import the module 'evil'" in said and not (tmp_path / "IMPORTED").exists()


def test_targets_in_a_config_dir_are_refused_wherever_they_hide(tmp_path):
    (tmp_path / "evil.py").write_text(MARKER)
    mine = tmp_path / "mine"
    files = {
        "experiment/cb.yaml": "# @package _global_\nhydra:\n  callbacks:\n    x:\n      _target_: evil.evil\n",
        # Hydra instantiates a launcher's config recursively: a target nested in a free-form mapping runs too.
        "hydra/launcher/nested.yaml": "defaults:\n  - submitit_slurm\nadditional_parameters:\n  x:\n"
                                      "    _target_: evil.evil\n",
        "hydra/job_logging/factory.yaml": "version: 1\nhandlers:\n  h:\n    (): evil.evil\nroot:\n  handlers: [h]\n",
        "hydra/job_logging/stream.yaml": "version: 1\nhandlers:\n  h:\n    class: logging.StreamHandler\n"
                                         "    stream: ext://evil.evil\nroot:\n  handlers: [h]\n",
        "experiment/plugin.yaml": "# @package _global_\nplugins: [evil]\n",
    }
    for name, text in files.items():
        (mine / name).parent.mkdir(parents=True, exist_ok=True)
        (mine / name).write_text(text)
    # (experiment=cb and hydra/job_logging=stream: the same doors as the fuzzer's, which runs them in-process)
    for choice in ("hydra/launcher=nested", "hydra/job_logging=factory", "experiment=plugin"):
        said = one_paragraph(run_cli("train", "--config-dir", str(mine), choice, *TINY, cwd=tmp_path, check=False))
        assert "evil" in said and ("may not choose code" in said or "never loads code" in said), said
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "outputs").exists()
    # The shipped choices, and standard logging classes of one's own, still work: only code is refused.
    (mine / "hydra/job_logging/plain.yaml").write_text(
        "version: 1\nhandlers:\n  h:\n    class: logging.StreamHandler\n    stream: ext://sys.stderr\n"
        "root:\n  handlers: [h]\n  level: INFO\n")
    run_cli("train", "--config-dir", str(mine), "hydra/job_logging=plain", *TINY, cwd=tmp_path)


def test_a_sweep_directory_never_chooses_code_on_resume(tmp_path):
    (tmp_path / "evil.py").write_text(MARKER)
    for name, task in (("target", ["seed=1,2", "+hydra.callbacks.x._target_=evil.evil"]), ("plugin", ["plugins=[evil]"])):
        sweep = tmp_path / name
        sweep.mkdir()
        (sweep / "multirun.yaml").write_text(json.dumps({"hydra": {"overrides": {"task": task}}}))
        said = one_paragraph(run_cli("sweep", "resume", str(sweep), cwd=tmp_path, check=False))
        assert "evil" in said
    assert "plugins=[evil]" in said and "never loads code by itself" in said
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "outputs").exists()


# --- 3. refusals leave nothing they made --------------------------------------------------------------------------

def test_refusals_leave_no_folder_they_made_and_keep_the_users(tmp_path):
    one_paragraph(run_cli("predict", "ckpt=missing.ckpt", "input=x.csv", cwd=tmp_path, check=False))
    one_paragraph(run_cli("train", "data.n_train=abc", *TINY[:1], cwd=tmp_path, check=False))  # in the command
    one_paragraph(run_cli("train", "-m", "seed=1,2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0",
                          cwd=tmp_path, check=False))
    assert not (tmp_path / "outputs").exists(), tree(tmp_path)
    day = tmp_path / "outputs" / "eval" / time.strftime("%Y-%m-%d")
    day.mkdir(parents=True)  # the user's own (empty) folder stays; the run directory eval made in it goes
    one_paragraph(run_cli("eval", "ckpt=missing.ckpt", cwd=tmp_path, check=False))
    assert day.is_dir() and not any(day.iterdir())


def test_a_sweep_the_launcher_refuses_leaves_no_sweep_directory(tmp_path):
    """A sweep refused after its directory was made (SLURM's sbatch says no): the paragraph is sbatch's words with
    the key to change, and the directory (multirun.yaml, submitit's scratch files) goes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid generic "
                                    "resource (gres) specification' >&2\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit looks for srun first: on a machine without
    (bin_dir / "srun").chmod(0o755)  # SLURM (before the cluster's tests install it) the refusal is still sbatch's
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = run_cli("train", "-m", "hydra/launcher=slurm", "seed=1,2", cwd=tmp_path, check=False, env=env)
    said = proc.stderr.split("error: ", 1)[1]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert said.startswith("SLURM refused to queue the sweep's jobs, so none ran: sbatch said: Batch job submission "
                           "failed: Invalid generic resource (gres) specification. Fix:")
    assert "gpus_per_node=null" in said
    assert not (tmp_path / "outputs").exists(), tree(tmp_path)


def test_sbatch_refusals_become_their_fix():
    assert "cpus_per_task" in explain_sbatch("sbatch: error: CPU count per node can not be satisfied\n"
                                             "sbatch: error: Batch job submission failed: Requested node "
                                             "configuration is not available")
    assert "does not answer" in explain_sbatch("sbatch: error: Batch job submission failed: Unable to contact slurm "
                                               "controller (connect failure)")
    assert "partition" in explain_sbatch("sbatch: error: invalid partition specified: gpu")


# --- 4. every exception is one paragraph --------------------------------------------------------------------------

def test_the_issues_scheduler_example_is_one_paragraph_and_leaves_nothing(tmp_path):
    """ZeroDivisionError inside torch's StepLR used to reach the console as a traceback with Hydra's hint. Whether
    the value is refused by its own check or met as an unexpected error, the user reads one paragraph."""
    said = one_paragraph(run_cli("train", "scheduler=step", "scheduler.step_size=0", *TINY, cwd=tmp_path,
                                 check=False), 1)
    assert "step_size" in said or ("ZeroDivisionError" in said and "please report it" in said)
    assert not (tmp_path / "outputs").exists(), tree(tmp_path)


def boom(cfg, ctx):
    """A command with a bug."""
    (ctx.run_dir / "half.txt").write_text("made before the bug")
    raise ZeroDivisionError("integer modulo by zero")


@pytest.fixture
def buggy(monkeypatch, tmp_path):
    """`train` replaced by a command with a bug, run in this process."""
    import logging
    from dataclasses import replace

    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where a bug's traceback goes when its run dir goes
    monkeypatch.setitem(cli.COMMANDS, "train", replace(cli.COMMANDS["train"], target="test_hardening_cli:boom"))
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr("sys.argv", ["trainkit"])
    GlobalHydra.instance().clear()
    yield tmp_path
    GlobalHydra.instance().clear()


def test_a_bug_in_a_command_is_one_paragraph_naming_the_log_under_hydra(buggy, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train"])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.startswith("error: trainkit train failed on an unexpected ZeroDivisionError: "
                                                   "integer modulo by zero (at ")
    assert "This is a bug in trainkit, please report it; its traceback is in " in err and "Traceback" not in err
    log = Path(err.split("its traceback is in ")[1].strip().rstrip("."))
    assert "Traceback" in log.read_text() and "ZeroDivisionError" in log.read_text()
    assert log.parent == buggy and not (buggy / "outputs").exists()  # the half-made run dir and its date folder went


def test_a_bug_through_the_python_api_is_trainkits_error(buggy):
    from trainkit.cli import inprocess

    with pytest.raises(InternalError, match="trainkit train failed on an unexpected ZeroDivisionError") as caught:
        inprocess.run("train", [])
    assert isinstance(caught.value.__cause__, ZeroDivisionError)  # from Python, the original stays reachable
    assert not (buggy / "outputs").exists()


def test_a_bug_in_a_sweep_job_is_its_row_and_its_traceback_stays_in_its_log(buggy, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "-m", "seed=1,2", "hydra.sweep.dir=sweep"])
    out, err = capsys.readouterr()
    assert stop.value.code == 1 and "Traceback" not in out + err
    assert "job 0 failed; the sweep goes on: job 0 failed on an unexpected ZeroDivisionError" in err
    (job,) = [p for p in (buggy / "sweep").iterdir() if p.name.startswith("0_")]
    assert "Traceback" in (job / "train.log").read_text()
    assert json.loads((job / "summary.json").read_text())["error"] == "ZeroDivisionError: integer modulo by zero"


def test_an_exception_from_a_plugin_module_names_the_plugin_not_trainkit(buggy, monkeypatch):
    from dataclasses import replace

    from trainkit import registry
    from trainkit.cli import inprocess

    (buggy / "my_broken.py").write_text("def run(cfg, ctx):\n    raise KeyError('oops')\n")
    monkeypatch.setattr(registry, "LOADED", dict(registry.LOADED))
    monkeypatch.setattr("sys.path", [str(buggy), *sys.path])
    registry.load_plugins(["my_broken"])
    monkeypatch.setitem(cli.COMMANDS, "train", replace(cli.COMMANDS["train"], target="my_broken:run"))
    try:
        with pytest.raises(InternalError, match="raised in the plugin module my_broken, which a user of trainkit "
                                                "wrote: fix it there; its traceback is in "):
            inprocess.run("train", [])
    finally:
        sys.modules.pop("my_broken", None)


def test_output_paths_that_cannot_be_run_directories_are_named(tmp_path):
    (tmp_path / "afile").write_text("")
    said = one_paragraph(run_cli("train", "hydra.run.dir=afile", *TINY, cwd=tmp_path, check=False), 1)
    assert "the run directory afile: File exists; a file of that name is in the way" in said
    said = one_paragraph(run_cli("eval", "ckpt=x.ckpt", f"hydra.run.dir=out/{'n' * 300}", cwd=tmp_path, check=False))
    assert "File name too long" in said and "choose a shorter one" in said
    assert not (tmp_path / "out").exists()
    said = one_paragraph(run_cli("train", "-m", "seed=1", "hydra.sweep.dir=afile/sweep", cwd=tmp_path, check=False))
    assert "the sweep directory afile/sweep (afile)" in said


def test_characters_beyond_the_terminals_encoding_are_escaped_not_fatal(tmp_path):
    env = {"PYTHONIOENCODING": "ascii", "LANG": "C", "LC_ALL": "C"}
    proc = run_cli("train", "hydra.run.dir='out/é'", *TINY, cwd=tmp_path, env=env)
    assert "out/\\xe9" in proc.stdout and (tmp_path / "out" / "é" / "summary.json").is_file()
    said = one_paragraph(run_cli("eval", "ckpt='é.ckpt'", cwd=tmp_path, env=env, check=False))
    assert "\\xe9.ckpt" in said
    said = one_paragraph(run_cli("train", "data.name=é", cwd=tmp_path, env=env, check=False))
    assert "must be quoted" in said


# --- 5. sweeps and searches: checked whole before a job starts ----------------------------------------------------

@pytest.mark.parametrize("args,said", [
    (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0: give a whole number of at least 1"),
    (["hydra.sweeper.n_trials=-3"], "hydra.sweeper.n_trials=-3"),
    (["optimizer.lr=interval(0.1,0.01)"], "is an empty or inverted interval"),
    (["optimizer.lr=interval(0.1,0.1)"], "is an empty or inverted interval"),
    (["hydra.sweeper.sampler.name=tp"], "hydra.sweeper.sampler.name=tp is not a sampler trainkit knows"),
    (["hydra.sweeper.direction=up"], "hydra.sweeper.direction=up: a search either minimizes or maximizes"),
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=0"], "hydra.launcher.n_jobs=0"),
    (["data.batch_size=choice(32,-4)"], "a trial with"),
])
def test_a_search_that_cannot_run_is_refused_before_its_first_trial(args, said, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", "-m", "hparams_search=regression_optuna", *args])
    err = capsys.readouterr().err
    assert code in (1, 2) and said in err and err.startswith("error:"), err
    assert not (tmp_path / "outputs").exists()


def test_a_search_preset_without_multirun_and_a_grid_of_an_interval_are_usage_errors(tmp_path):
    said = one_paragraph(run_cli("train", "hparams_search=regression_optuna", cwd=tmp_path, check=False), 2)
    assert "needs -m (--multirun): trainkit train -m hparams_search=regression_optuna" in said
    said = one_paragraph(run_cli("train", "-m", "seed=1,2", "optimizer.lr=0.1,-1", cwd=tmp_path, check=False), 1)
    assert said.startswith("error: job 1 (seed=1 optimizer.lr=-1) of this sweep would fail, so none starts")
    assert not (tmp_path / "outputs").exists()


def test_damaged_sweep_directories_are_refused_by_name(tmp_path):
    cases = {"garbled": "hydra: [\n", "list": "- a\n- b\n", "task": "hydra:\n  overrides:\n    task: {a: 1}\n",
             "grammar": "hydra:\n  overrides:\n    task:\n    - 'seed=(1'\n"}
    for name, text in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "multirun.yaml").write_text(text)
        said = one_paragraph(run_cli("sweep", "resume", str(tmp_path / name), cwd=tmp_path, check=False), 1)
        assert f"{name}/multirun.yaml is damaged" in said
    said = one_paragraph(run_cli("sweep", "resume", str(tmp_path / "nowhere"), "--bogus", cwd=tmp_path, check=False), 2)
    assert "unrecognized arguments: --bogus" in said


# --- 6. signals end every command within seconds ------------------------------------------------------------------

def _signal_when(args: list[str], cwd: Path, ready, signum: int) -> tuple[subprocess.CompletedProcess, float]:
    # Ctrl-C as at a terminal: a suite started in the background (nohup ... &) has SIGINT ignored, and a child keeps
    # that, as Python and trainkit rightly respect it.
    proc = subprocess.Popen([*TRAINKIT, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    sent = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - sent


def test_predict_and_eval_of_big_inputs_end_on_sigterm_and_sigint_within_seconds(tmp_path):
    run_cli("train", *TINY, "hydra.run.dir=run", cwd=tmp_path)
    (tmp_path / "big.csv").write_text("x\n" + "0.25\n-1.5\n" * 1_500_000)
    made = lambda: bool(list((tmp_path / "outputs").glob("predict/*/*/.hydra")))
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        proc, took = _signal_when(["predict", "ckpt=run", "input=big.csv"], tmp_path, made, signum)
        assert proc.returncode == code and took < 10, (took, proc.stderr)
        assert proc.stderr.startswith("stopped: stopped by") and "Traceback" not in proc.stderr
        assert not (tmp_path / "outputs").exists(), tree(tmp_path)
    made = lambda: bool(list((tmp_path / "outputs").glob("eval/*/*/.hydra")))
    proc, took = _signal_when(["eval", "ckpt=run", "data.n_test=3000000"], tmp_path, made, signal.SIGTERM)
    assert proc.returncode == 143 and took < 10 and "Traceback" not in proc.stderr, (took, proc.stderr)
    assert not (tmp_path / "outputs").exists(), tree(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_run_directory_in_a_folder_one_may_not_write_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        said = one_paragraph(run_cli("eval", "ckpt=x.ckpt", "hydra.run.dir=locked/run", cwd=tmp_path, check=False))
    finally:
        locked.chmod(0o755)
    assert "Permission denied; you may not write there" in said and not any(locked.iterdir())


def test_sweep_resume_passes_sigterm_to_its_job_which_saves_then_it_summarises(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    task = ["trainer.max_epochs=50", "data.n_train=16384", "trainer.checkpoint_every_n_steps=8",
            "trainer.progress=none", "trainer.tensorboard=false", "seed=1,2"]
    (sweep / "multirun.yaml").write_text(json.dumps({"hydra": {"overrides": {"task": task}}}))
    started = lambda: bool(list(sweep.glob("0_*/checkpoints/last.ckpt")))
    proc, took = _signal_when(["sweep", "resume", str(sweep)], tmp_path, started, signal.SIGTERM)
    assert proc.returncode == 143 and took < 15, (took, proc.stdout, proc.stderr)
    assert "stopped during job 0" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    (job,) = sweep.glob("0_*")
    assert json.loads((job / "summary.json").read_text())["status"] == "interrupted"
    assert (sweep / "sweep_summary.csv").is_file() and not list(sweep.glob("1_*"))


# --- 9. a plugin run resumed without its plugin --------------------------------------------------------------------

def test_resuming_a_plugin_run_without_its_plugin_names_the_module(tmp_path):
    (tmp_path / "my_nets.py").write_text(textwrap.dedent("""
        import math
        from torch import nn
        import trainkit

        @trainkit.register_model("tiny")
        def tiny(in_shape, num_outputs, width: int = 8):
            return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width), nn.ReLU(),
                                 nn.Linear(width, num_outputs))
        """))
    run_cli("train", "model=tiny", "plugins=[my_nets]", *TINY, "hydra.run.dir=run", cwd=tmp_path)
    said = one_paragraph(run_cli("train", "resume=run", "model=tiny", cwd=tmp_path, check=False), 2)
    assert "run was trained with the model 'tiny' of the plugin module my_nets, which is not loaded" in said
    assert "Load it: trainkit train resume=run model=tiny plugins=[my_nets]" in said
    said = one_paragraph(run_cli("train", "model=tinyy", cwd=tmp_path, check=False), 2)
    assert "If 'tinyy' is a model that a plugin module of yours registers" in said


def test_user_errors_pass_through_explain_unchanged():
    from trainkit.cli.failure import explain

    error = UserError("a person can fix this")
    assert explain(error) is error
    assert "cannot use" in str(explain(PermissionError(13, "Permission denied", "/x")))


@pytest.mark.parametrize("override", ["logger=null", "scheduler=-1", "scheduler=[1,2]", "logger=[tensorboard,[csv]]",
                                      "model=true"])
def test_a_group_set_to_something_that_is_no_name_is_a_usage_error_naming_it(override, tmp_path, monkeypatch, capsys):
    """Hydra meets these in its defaults list as a bare ValueError or TypeError: trainkit names the override."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", override, *TINY]) == 2
    said = capsys.readouterr().err
    assert said.startswith(f"error: {override}: a config group takes the name of one of its options"), said
    assert "bug" not in said and not (tmp_path / "outputs").exists()
