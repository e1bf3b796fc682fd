"""Two machines under one torchrun (tests/cluster.py: two network namespaces joined by a veth pair, each with its own
host name): one run directory on the shared filesystem, the metrics of one process at the same global batch, and a
SIGTERM to one host's agent that stops both with a checkpoint that resume= continues."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import torch
from cluster import Host, started, stop, two_hosts, wait_for  # noqa: F401 (started: a fixture)
from conftest import TRAINKIT, run_dirs

from trainkit.engine import checkpoint

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
RUN = ["trainer.progress=none", "trainer.tensorboard=false", "trainer.num_threads=1", "model.dropout=0.0",
       "data.n_train=20000", "trainer.max_epochs=3", "trainer.checkpoint_every_n_steps=20"]


def torchrun(host: Host, first: Host, cwd: Path, *args: str) -> subprocess.Popen:
    """One host's share of a two-host run: the exact command a user types on each machine."""
    return host.popen([TORCHRUN, "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
                       f"--rdzv_endpoint={first.address}:29500", "--rdzv_id=tk-two-hosts",
                       "-m", "trainkit", "train", *args], cwd=cwd, stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT, text=True)


def test_two_hosts_train_as_one_and_a_sigterm_to_one_agent_stops_both_resumably(started, tmp_path):
    reference = subprocess.Popen([*TRAINKIT, "train", *RUN, "data.batch_size=64"], cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started.append(reference)
    cwd = tmp_path / "shared"
    cwd.mkdir()
    with two_hosts() as (a, b):
        agents = [torchrun(host, a, cwd, *RUN, "data.batch_size=32") for host in (a, b)]
        try:
            (run_dir,) = wait_for("rank 0's first checkpoint", lambda: [
                d for d in run_dirs(cwd) if list(d.glob("checkpoints/epoch*-step*.ckpt"))], 120, agents[0])
            agents[1].send_signal(signal.SIGTERM)  # host b's torchrun: it passes the signal to its process
            outs = [p.communicate(timeout=60)[0] for p in agents]
        finally:
            for proc in agents:
                stop(proc)
        assert "data-parallel: 2 processes, global batch 2 × 32" in outs[0], outs[0]
        assert "stopped by SIGTERM" in outs[0], "host a's process stopped with host b's\n" + outs[0]
        assert all(p.returncode != 0 for p in agents), outs
        saved = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["fit"]
        assert saved["step"] > 0, "host a saved where both stopped"
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"

        agents = [torchrun(host, a, cwd, *RUN, "data.batch_size=32", f"resume={run_dir}") for host in (a, b)]
        try:
            outs = [p.communicate(timeout=120)[0] for p in agents]
        finally:
            for proc in agents:
                stop(proc)
        assert all(p.returncode == 0 for p in agents), outs
        assert f"at epoch {saved['epoch'] + 1}, batch {saved['batch']} (step {saved['step']})" in outs[0], outs[0]
    assert run_dirs(cwd) == [run_dir], "one run directory for both hosts, and for the resumed run"
    assert reference.wait(timeout=120) == 0, reference.communicate()[0]
    (one,) = run_dirs(tmp_path)
    two, single = (json.loads((d / "summary.json").read_text()) for d in (run_dir, one))
    assert two["status"] == "finished" and two["steps"] == single["steps"] > saved["step"]
    for key in ("train/loss", "val/loss", "val/mae"):
        assert abs(two["final"][key] - single["final"][key]) <= 1e-4 * abs(single["final"][key]) + 1e-6, key
    wa, wb = (checkpoint.load(d / "checkpoints" / "last.ckpt")["modules"]["net"] for d in (run_dir, one))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
