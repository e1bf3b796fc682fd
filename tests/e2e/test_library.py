"""The library under the shells: the Python API in this process, a Trainer built without a config, the runs of a
folder as a DataFrame, a tracker and a cluster environment behind their seams, and the conventions every command
keeps (errors on stderr, the exit codes of one table)."""

from __future__ import annotations

import csv
import json
import logging
import re
import sys

import pytest
import torch
from conftest import ROOT, run_cli

import trainkit
from trainkit import clusters
from trainkit.api import run
from trainkit.errors import EXIT_CODES, ConfigError, UserError
from trainkit.trainer import Callback

QUICK = ["trainer.max_epochs=2", "data.n_train=128", "data.n_val=32", "data.n_test=32", "model.hidden=[8]",
         "trainer.progress=none", "trainer.num_threads=1"]


class Epochs(Callback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_epoch_end(self, trainer, epoch, metrics):
        self.seen.append(epoch)


def test_train_runs_in_this_process_without_touching_argv_the_root_logger_or_globals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, root = list(sys.argv), logging.getLogger()
    handlers, level = list(root.handlers), root.level
    epochs = Epochs()
    summary = trainkit.train([*QUICK, "hydra.run.dir=outputs/api"], callbacks=[epochs])
    assert sys.argv == argv and root.handlers == handlers and root.level == level
    assert epochs.seen == [1, 2] and summary["status"] == "finished"
    run_dir = tmp_path / "outputs" / "api"
    assert (run_dir / ".hydra" / "overrides.yaml").is_file() and (run_dir / "train.log").is_file()
    again = trainkit.train([*QUICK, "hydra.run.dir=outputs/api2"])  # nothing of the first run leaks into the second
    assert again["status"] == "finished" and again["run_dir"] != summary["run_dir"]
    with pytest.raises(UserError, match="is not a trainkit.trainer.Callback"):
        trainkit.train([*QUICK, "hydra.run.dir=outputs/api3"], callbacks=[print])
    with pytest.raises(ConfigError, match="takes a list of strings"):
        trainkit.train("trainer.max_epochs=1")


def test_make_trainer_trains_registered_components_without_a_config_and_its_checkpoint_serves_every_command(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = trainkit.make_trainer(
        "outputs/built", data={"name": "synthetic_regression", "n_train": 128, "n_val": 32, "n_test": 32},
        model={"name": "mlp", "hidden": [8]}, optimizer={"name": "adam", "lr": 0.01},
        trainer={"max_epochs": 2, "progress": "none"}, logger="csv", callbacks=[Epochs()])
    assert isinstance(trainer, trainkit.Trainer)
    summary = trainer.run()
    assert summary["status"] == "finished" and summary["epochs"] == 2, summary
    best = summary["checkpoints"]["best"]
    assert set(run("eval", [f"ckpt={best}"])["metrics"]) >= {"test/loss", "test/mae"}
    (tmp_path / "x.csv").write_text("x\n0.1\n-0.5\n")
    run("predict", [f"ckpt={best}", "input=x.csv", "output=p.csv"])
    assert len(list(csv.DictReader((tmp_path / "p.csv").open()))) == 2
    run("export", [f"ckpt={best}", "format=torchscript", "output=m.pt"])
    assert torch.jit.load(tmp_path / "m.pt")(torch.tensor([[0.1]])).shape == (1, 1)
    assert trainkit.load(best).predict([[0.1], [-0.5]]) == pytest.approx(
        [float(r["prediction"]) for r in csv.DictReader((tmp_path / "p.csv").open())], rel=1e-5)
    with pytest.raises(ConfigError, match="make_trainer\\(model=...\\) takes a registered model by name"):
        trainkit.make_trainer(data="synthetic_regression", model=3)


def test_runs_gives_the_runs_of_a_folder_as_a_dataframe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainkit.train([*QUICK, "hydra.run.dir=outputs/a"])
    trainkit.train([*QUICK, "optimizer.lr=0.01", "hydra.run.dir=outputs/b"])
    frame = trainkit.runs("outputs")
    assert list(frame.columns[:4]) == ["path", "started", "status", "overrides"]
    assert sorted(frame["path"]) == ["outputs/a", "outputs/b"] and set(frame["status"]) == {"finished"}
    assert frame.loc[frame["path"] == "outputs/b", "overrides"].item().count("optimizer.lr=0.01") == 1
    assert (frame["monitor"] == "val/loss").all() and (frame["best_value"] > 0).all()
    assert frame["trainer.max_epochs"].tolist() == [2, 2] and frame["optimizer.lr"].max() == 0.01  # numbers
    with pytest.raises(UserError, match="is not a directory"):
        trainkit.runs("nowhere")


def test_the_csv_tracker_writes_every_metric_and_the_config_and_resumes_its_rows(tmp_path):
    run_cli("train", *QUICK, "logger=[tensorboard,csv]", "hydra.run.dir=run", cwd=tmp_path)
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    names = {r["name"] for r in rows}
    assert {"train/loss", "val/loss", "test/loss", "best/val/loss"} <= names, names
    assert [int(r["step"]) for r in rows] == sorted(int(r["step"]) for r in rows)
    params = dict(csv.reader((tmp_path / "run" / "csv" / "params.csv").open()))
    assert params["optimizer.name"] == "adam" and params["trainer.max_epochs"] == "2"
    assert (tmp_path / "run" / "tensorboard").is_dir()
    run_cli("train", *QUICK[1:], "trainer.max_epochs=3", "logger=[tensorboard,csv]", "resume=run", cwd=tmp_path)
    again = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    epochs = [r for r in again if r["name"] == "epoch"]
    assert [float(r["value"]) for r in epochs] == [1.0, 2.0, 3.0], epochs


def test_the_cluster_environment_is_detected_named_or_refused(monkeypatch):
    for var in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    assert clusters.detect().name == "single"
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert clusters.detect().name == "slurm"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "r")
    assert clusters.detect().name == "torchrun"  # torchrun inside a SLURM job: its agent started the processes
    assert clusters.detect("single").name == "single"
    with pytest.raises(ConfigError, match="trainer.cluster='pbs' is not a cluster environment: use auto, or one of"):
        clusters.detect("pbs")


def test_a_registered_cluster_environment_takes_over_where_it_detects_itself(tmp_path):
    (tmp_path / "mypool.py").write_text('''
import os, signal
import trainkit
from trainkit.clusters import ClusterEnvironment


@trainkit.register_cluster("mypool")
class MyPool(ClusterEnvironment):
    priority = 5
    stop_signals = {**ClusterEnvironment.stop_signals, signal.SIGUSR2: 143}

    @staticmethod
    def detect():
        return "MYPOOL_JOB_ID" in os.environ

    def requeue(self, signum):
        return f"mypool: job {os.environ['MYPOOL_JOB_ID']} back in the queue"
''')
    import subprocess
    from conftest import TRAINKIT
    import os
    import signal
    import time

    env = {**os.environ, "MYPOOL_JOB_ID": "42", "COLUMNS": "200"}
    proc = subprocess.Popen([*TRAINKIT, "train", "plugins=[mypool]", *QUICK[1:], "trainer.max_epochs=200",
                             "data.n_train=4096", "trainer.progress=plain", "hydra.run.dir=run"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "run" / "metrics.csv").is_file() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, out + err
    assert "mypool: job 42 back in the queue" in out, out
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_errors_go_to_stderr_and_results_to_stdout(tmp_path):
    bad = run_cli("train", "trainer.grad_clip=0", cwd=tmp_path, check=False)
    assert bad.returncode == EXIT_CODES["error"]
    assert bad.stderr.startswith("error: trainer.grad_clip=0.0 must be a positive norm") and "error" not in bad.stdout
    usage = run_cli("train", "trainer.nokey=1", cwd=tmp_path, check=False)
    assert usage.returncode == EXIT_CODES["usage"] and "trainer.nokey" in usage.stderr and usage.stdout == ""
    good = run_cli("train", *QUICK, "hydra.run.dir=run", cwd=tmp_path)
    assert "best checkpoint: run/checkpoints/best.ckpt" in good.stdout and "error" not in good.stderr


def test_the_exit_code_table_of_the_docs_is_the_one_the_code_uses():
    page = (ROOT / "docs" / "troubleshooting.md").read_text()
    table = page[page.index("## Exit codes"):]
    documented = {int(code) for code in re.findall(r"^\| `(\d+)` \|", table, re.M)}
    assert documented == set(EXIT_CODES.values())


def test_the_docs_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a broken link or anchor between the pages fails it."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "extending" / "index.html").is_file()
    summary = json.dumps(sorted(p.name for p in (tmp_path / "site").iterdir()))
    assert "architecture" in summary
