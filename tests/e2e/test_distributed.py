"""Data-parallel training with torch.distributed (gloo on the CPU), and the SLURM requeue call.

A real SLURM cluster, two hosts and elastic restarts: test_slurm.py, test_multihost.py, test_elastic.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from conftest import TRAINKIT, run_cli, run_dirs

from trainkit.data.base import DataMeta, Split
from trainkit.data.loader import BatchLoader
from trainkit.engine import checkpoint

# One torch thread per process: on a 2-core machine, default threads in two processes run many times slower.
RUN = ["trainer.max_epochs=2", "trainer.progress=none", "trainer.tensorboard=false", "model.dropout=0.0",
       "trainer.num_threads=1"]


def test_shards_cover_each_global_batch_exactly_once():
    split = Split(torch.arange(100).float()[:, None], torch.arange(100))
    meta = DataMeta(name="toy", kind="classification", in_shape=(1,), num_outputs=100)
    single = BatchLoader(split, meta, 20, torch.device("cpu"), shuffle=True, seed=1)
    shards = [BatchLoader(split, meta, 10, torch.device("cpu"), shuffle=True, seed=1, shard=(r, 2)) for r in (0, 1)]
    for loader in (single, *shards):
        loader.set_epoch(3)
    batches = [list(loader) for loader in shards]
    assert len(shards[0]) == len(single) == 5
    for b, (_, y) in enumerate(single):
        assert torch.equal(torch.cat([batches[0][b][1], batches[1][b][1]]), y)
    evals = [BatchLoader(split, meta, 16, torch.device("cpu"), shard=(r, 3)) for r in range(3)]
    seen = torch.cat([y for loader in evals for _, y in loader])
    assert sorted(seen.tolist()) == list(range(100)), "evaluation counts every sample exactly once"


def test_two_processes_match_one_process_with_twice_the_batch(tmp_path):
    out = run_cli("train", "trainer.devices=2", "data.batch_size=32", *RUN, cwd=tmp_path / "ddp"
                  if (tmp_path / "ddp").mkdir() is None else tmp_path, timeout=600).stdout
    assert "global batch 2 × 32 = 64" in out
    (ddp,) = run_dirs(tmp_path / "ddp")
    assert len(list((tmp_path / "ddp" / "outputs").glob("*/*"))) == 1, "one run directory, not one per rank"
    (tmp_path / "one").mkdir()
    run_cli("train", "data.batch_size=64", *RUN, cwd=tmp_path / "one")
    (one,) = run_dirs(tmp_path / "one")
    a, b = (json.loads((d / "summary.json").read_text()) for d in (ddp, one))
    for key in ("train/loss", "val/loss", "val/mae"):
        assert a["final"][key] == pytest.approx(b["final"][key], rel=1e-4, abs=1e-6), key
    assert a["test"]["test/loss"] == pytest.approx(b["test"]["test/loss"], rel=1e-4)
    wa = checkpoint.load(ddp / "checkpoints" / "last.ckpt")["modules"]["net"]
    wb = checkpoint.load(one / "checkpoints" / "last.ckpt")["modules"]["net"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_sigterm_to_the_launcher_leaves_a_resumable_checkpoint(tmp_path):
    args = ["train", "trainer.devices=2", "data.n_train=36000", "trainer.progress=none", "trainer.max_epochs=2",
            "trainer.tensorboard=false", "trainer.num_threads=1", "trainer.checkpoint_every_n_steps=20"]
    proc = subprocess.Popen([*TRAINKIT, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.time() + 180
    while not list(tmp_path.glob("outputs/*/*/checkpoints/epoch001-step*.ckpt")):  # rank 0 is 20 steps in
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    (run_dir,) = run_dirs(tmp_path)
    saved = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["fit"]
    assert saved["step"] > 0
    run_cli("train", *args[1:], "resume=auto", cwd=tmp_path, timeout=600)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert run_dirs(tmp_path) == [run_dir]


def test_slurm_launcher_preset_composes(compose):
    cfg = compose("hydra/launcher=slurm", "hydra.launcher.partition=gpu", return_hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher.partition == "gpu" and launcher.signal_delay_s == 120
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.additional_parameters.signal == "USR1@120", "SLURM's warning is trainkit's stop signal"
    assert any(line.startswith("srun() {") and "kill -USR1" in line for line in launcher.setup)


def test_the_batch_script_passes_usr1_on_to_its_srun(compose, tmp_path):
    """`scancel --batch --signal=USR1` reaches only the batch shell: the launcher's setup lines hand it to srun, and
    the job still ends with srun's exit code. A stand-in srun records the signal."""
    setup = compose("hydra/launcher=slurm", return_hydra=True).hydra.launcher.setup
    fake = tmp_path / "srun"
    fake.write_text("#!/bin/sh\ntrap 'echo got USR1 >> $0.log; exit 7' USR1\necho started >> $0.log\n"
                    "while :; do sleep 0.05; done\n")
    fake.chmod(0o755)
    shell = subprocess.Popen(["bash", "-c", "\n".join([*setup, f"PATH={tmp_path}:$PATH", "srun --unbuffered x"])])
    log = tmp_path / "srun.log"
    deadline = time.time() + 10
    while not log.exists():
        assert time.time() < deadline and shell.poll() is None
        time.sleep(0.02)
    shell.send_signal(signal.SIGUSR1)
    assert shell.wait(timeout=10) == 7, "the batch script ends as srun did"
    assert log.read_text().split("\n")[:2] == ["started", "got USR1"]


def test_sigusr1_in_a_slurm_job_saves_and_calls_scontrol_requeue(tmp_path):
    """The requeue call, against a stand-in scontrol; test_slurm.py runs the whole cycle on a real cluster."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "scontrol.log"
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {record}\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "HYDRA_FULL_ERROR": "0"}
    args = [*TRAINKIT, "train", "data.n_train=1000000", "trainer.progress=none", "trainer.tensorboard=false",
            "trainer.num_threads=1", "trainer.max_epochs=1", "resume=auto", "hydra.run.dir=outputs/job/4242"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "outputs" / "job" / "4242" / "checkpoints").exists():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "requeued SLURM job 4242" in out, out
    assert record.read_text().split() == ["requeue", "4242"]
    rerun = subprocess.run([*args[:-2], "trainer.max_epochs=1", "resume=auto", "hydra.run.dir=outputs/job/4242"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "resuming outputs/job/4242" in rerun.stdout, rerun.stdout + rerun.stderr
