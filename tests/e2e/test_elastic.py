"""Elastic restarts resume by themselves: under `torchrun --max_restarts=N` (and `trainer.devices=N`, which launches
through the same elastic API) a process killed mid-epoch makes the group restart, and the restarted processes continue
from the newest checkpoint in the same run directory, bitwise as if nothing had happened. Without restarts left, the
run ends failed and names the checkpoint to resume from.

Each run is on a host of its own (tests/cluster.py): torch's stores listen on every address of their host."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cluster import Host, children, isolated_host, started, stop, wait_for  # noqa: F401 (started: a fixture)
from conftest import TRAINKIT, run_dirs

from trainkit.engine import checkpoint

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
# Shuffling, dropout and a scheduler must all continue exactly; one thread, as every process compared here.
RUN = ["trainer.progress=none", "trainer.tensorboard=false", "trainer.num_threads=1", "trainer.deterministic=true",
       "data.n_train=4096", "data.batch_size=32", "trainer.max_epochs=3", "trainer.checkpoint_every_n_steps=10",
       "model.dropout=0.1", "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.9"]


@pytest.fixture(scope="module")
def host():
    with isolated_host("e") as made:
        yield made


def launch(started: list, host: Host, cwd: Path, *argv: str) -> subprocess.Popen:
    started.append(host.popen(list(argv), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return started[-1]


def torchrun(started: list, host: Host, cwd: Path, *options: str, run: tuple[str, ...] = tuple(RUN)):
    return launch(started, host, cwd, TORCHRUN, "--nproc_per_node=2", "--rdzv_backend=c10d",
                  "--rdzv_endpoint=localhost:0", *options, "-m", "trainkit", "train", *run)


def finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def reference(host, tmp_path_factory) -> Path:
    """The same data-parallel run, never interrupted."""
    cwd = tmp_path_factory.mktemp("reference")
    proc = torchrun([], host, cwd)
    out = finish(proc)
    assert proc.returncode == 0, out
    (run_dir,) = run_dirs(cwd)
    return run_dir


def environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def kill_rank_1_mid_epoch(agent: subprocess.Popen, cwd: Path) -> Path:
    """SIGKILL for the process of rank 1 once rank 0 has saved a mid-epoch checkpoint; returns the run directory."""
    (run_dir,) = wait_for("a mid-epoch checkpoint", lambda: [
        d for d in run_dirs(cwd) if list(d.glob("checkpoints/epoch001-step*.ckpt"))], 120, agent, every=0.005)
    workers = wait_for("the process of rank 1", lambda: [
        pid for pid in children(agent.pid) if environment(pid).get("RANK") == "1"], 10, agent)
    os.kill(workers[0], signal.SIGKILL)
    return run_dir


def timeless(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(("time/", "train/samples_per_s"))}


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = (checkpoint.load(d / "checkpoints" / "last.ckpt") for d in (a, b))
    assert all(torch.equal(wa["modules"]["net"][k], wb["modules"]["net"][k]) for k in wa["modules"]["net"]), \
        "final weights differ from the uninterrupted run's"
    assert [timeless(r) for r in wa["fit"]["history"]] == [timeless(r) for r in wb["fit"]["history"]]
    epochs = [row["epoch"] for row in csv.DictReader((a / "metrics.csv").open())]
    assert epochs == ["1", "2", "3"], "each epoch once in metrics.csv"


def test_torchrun_restarts_the_group_after_a_sigkill_and_it_resumes_exactly(host, reference, started, tmp_path):
    agent = torchrun(started, host, tmp_path, "--max_restarts=2")
    run_dir = kill_rank_1_mid_epoch(agent, tmp_path)
    out = finish(agent)
    assert agent.returncode == 0, out
    assert "is gone (RuntimeError: " in out and "torch elastic restarts them all (2 restarts left)" in out, out
    assert "torch elastic restarted the processes after one of them failed (1 restart left): continuing" in out, out
    resumed = out.split("resuming ", 1)[1].split("\n", 1)[0]
    assert "at epoch 1, batch " in resumed and ", batch 0 " not in resumed, "continued mid-epoch: " + resumed
    assert run_dirs(tmp_path) == [run_dir], "the restarted processes continued in the first attempt's run directory"
    assert_same_run(run_dir, reference)


def test_devices_n_restarts_its_processes_after_a_sigkill_and_they_resume_exactly(host, reference, started,
                                                                                   tmp_path):
    agent = launch(started, host, tmp_path, *TRAINKIT, "train", "trainer.devices=2", *RUN)
    run_dir = kill_rank_1_mid_epoch(agent, tmp_path)
    out = finish(agent)
    assert agent.returncode == 0, out
    assert "torch elastic restarted the processes after one of them failed (1 restart left)" in out, out
    assert run_dirs(tmp_path) == [run_dir]
    assert_same_run(run_dir, reference)


def test_without_restarts_left_the_run_fails_and_names_the_checkpoint(host, started, tmp_path):
    agent = torchrun(started, host, tmp_path, "--max_restarts=0")
    run_dir = kill_rank_1_mid_epoch(agent, tmp_path)
    out = finish(agent)
    assert agent.returncode != 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed", summary
    saved = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["fit"]
    assert f"no restarts are left: continue from {run_dir.relative_to(tmp_path)}/checkpoints/last.ckpt" in out, out
    assert f"step {saved['step']}) with the same command and resume={run_dir.relative_to(tmp_path)}" in out, out
    assert summary["error"].endswith(f"resume={run_dir.relative_to(tmp_path)}")


def test_a_restart_does_not_replay_an_error_that_would_end_the_run_again(host, started, tmp_path):
    """A diverged run (or a mistake) fails the same way after a restart: the restarted processes stop at once."""
    agent = torchrun(started, host, tmp_path, "--max_restarts=1",
                     run=(*RUN, "optimizer=sgd", "optimizer.lr=1e6", "trainer.log_every_n_steps=1"))
    out = finish(agent)
    assert agent.returncode != 0
    assert "torch elastic restarted the processes, but a restart cannot help: training diverged" in out, out
    assert out.count("run directory:") == 1, "the restarted processes did not train again"
