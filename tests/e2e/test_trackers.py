"""Experiment trackers through the real CLI: a real MLflow tracking server (SQLite backend, on 127.0.0.1) read back
with MlflowClient across a resume, a W&B offline run read back from its own files, and the missing-extra error."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import FAST, run_cli, run_dirs

from trainkit import extras
from trainkit.extras import MissingExtra

TINY = [*FAST, "data.n_train=256", "data.batch_size=32"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """`mlflow server` with a SQLite backend and local artifacts, listening on 127.0.0.1; stopped after the test."""
    pytest.importorskip("mlflow")
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    log = (store / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination", str(store / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=store)
    uri = f"http://127.0.0.1:{port}"
    try:
        # Straight to 127.0.0.1: urlopen's global opener keeps the proxies of the environment it first saw.
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 180  # a loaded 2-core machine: its first request can take many seconds
        while True:
            try:
                with direct.open(f"{uri}/health", timeout=15) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlflow server did not start (exit code {proc.poll()}):\n"
                                     f"{(store / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_mlflow_server_gets_params_metrics_pictures_and_one_run_across_a_resume(tmp_path, mlflow_server, mnist_files):
    from mlflow import MlflowClient

    data = ["data=mnist_csv", f"data.train_csv={mnist_files['plain_train']}", f"data.test_csv={mnist_files['plain_test']}",
            "data.batch_size=32", *FAST]
    tracking = ["logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={mlflow_server}",
                "logger.mlflow.experiment=trackers-test"]
    run_cli("train", *data, *tracking, "trainer.max_epochs=2", cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    run_cli("train", *data, *tracking, "trainer.max_epochs=3", f"resume={run_dir}", cwd=tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("trackers-test")
    (run,) = client.search_runs([experiment.experiment_id])  # one run across the resume
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["trainer.max_epochs"] == "2"  # the config it started with; MLflow's params are write-once
    assert params["data.batch_size"] == "32" and "optimizer.lr" in params
    assert len(params) >= 30
    val = client.get_metric_history(run.info.run_id, "val/loss")
    assert [m.step for m in val] == sorted(m.step for m in val) and len(val) == 3  # one per epoch, none twice
    steps = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(steps) > len(val)  # every trainer.log_every_n_steps, and each epoch's mean
    for key, value in summary["final"].items():
        if key not in ("epoch", "step"):
            assert run.data.metrics[key] == pytest.approx(value, rel=1e-6), key
    for key, value in summary["test"].items():
        assert run.data.metrics[key] == pytest.approx(value, rel=1e-6)
    assert run.data.metrics["best/value"] == pytest.approx(summary["best_value"], rel=1e-6)
    assert run.data.tags["trainkit.best_checkpoint"] == str(Path(summary["checkpoints"]["best"]).resolve())
    assert "inputs.png" in [a.path for a in client.list_artifacts(run.info.run_id)]
    print(f"mlflow: {len(params)} params, {len(steps)} train/loss points, {len(val)} val/loss points, one run")


def test_sweep_jobs_share_an_mlflow_experiment_with_their_overrides_as_tags(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    run_cli("train", "-m", "logger=mlflow", "optimizer=sgd,adam", *TINY, "trainer.max_epochs=1",
            "hydra.sweep.dir=outputs/multirun/sweep1", cwd=tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")  # the default store
    experiment = client.get_experiment_by_name("trainkit/sweep1")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["override.optimizer"] for r in runs) == ["adam", "sgd"]
    assert not (tmp_path / "outputs" / "multirun" / "sweep1" / "tensorboard").exists()


def wandb_records(path: Path):
    """The records of a .wandb file: W&B's log format (a 7-byte header, then 32 KiB blocks of chunks, each with a
    7-byte header: checksum, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7])[0] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):
            pos += left  # the rest of the block is padding
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # W&B stores `val/loss` as the nested key (val, loss)


def test_wandb_offline_run_read_back_from_its_files(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    env = {"NETRC": str(tmp_path / "no-netrc"), "HOME": str(tmp_path)}  # no API key configured anywhere
    run_cli("train", "logger=wandb", "logger.wandb.project=tk-test", *TINY, "trainer.max_epochs=2", cwd=tmp_path,
            env=env)
    (run_dir,) = run_dirs(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    (file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")  # offline: no API key configured
    history, result, run = [], {}, None
    for record in wandb_records(file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            result.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "run":
            run = record.run
    assert run is not None and run.project == "tk-test"
    config = {_key(i): json.loads(i.value_json) for i in run.config.update}
    assert config["trainer.max_epochs"] == 2 and config["optimizer.lr"] == pytest.approx(0.001)
    epochs = [h for h in history if "val/loss" in h]
    assert [h["epoch"] for h in epochs] == [1, 2]
    for key, value in summary["final"].items():
        if key not in ("epoch", "step"):
            assert result[key] == pytest.approx(value, rel=1e-6), key
    assert result["test/loss"] == pytest.approx(summary["test"]["test/loss"], rel=1e-6)
    assert not (run_dir / "tensorboard").exists()  # logger=wandb alone

    run_cli("train", "logger=wandb", "logger.wandb.project=tk-test", *TINY, "trainer.max_epochs=3", f"resume={run_dir}",
            cwd=tmp_path, env=env)
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2 and {f.name for f in files} == {file.name}  # the same W&B run id, continued
    (later,) = [f for f in files if f != file]
    epochs = [json.loads(i.value_json) for r in wandb_records(later) if r.WhichOneof("record_type") == "history"
              for i in r.history.item if _key(i) == "epoch"]
    assert epochs == [3]  # the resumed run logs on from where the checkpoint left it


def test_a_missing_tracker_extra_is_an_error_that_names_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(MissingExtra, match=r"logger=mlflow needs the mlflow package.*trainkit\[mlflow\]"):
        extras.require_module("mlflow", "logger=mlflow", "mlflow")


def test_trainer_tensorboard_false_still_switches_tensorboard_off(tmp_path):
    run_cli("train", *TINY, "trainer.max_epochs=1", "trainer.tensorboard=false", cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "summary.json").is_file()
    assert not (run_dir / "tensorboard").exists()
