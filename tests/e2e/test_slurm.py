"""trainkit on a real SLURM cluster (tests/cluster.py): sweeps through Hydra's submitit launcher and sbatch, pre-emption
and time limits that requeue a job which then resumes exactly, and a job of two data-parallel tasks."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch
from cluster import NOTES, SlurmCluster, started, stop, wait_for  # noqa: F401 (started: a fixture)
from conftest import TRAINKIT, run_dirs

from trainkit.engine import checkpoint

LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1"]
# One thread each, so that a job and the run it is compared with compute alike while sharing the 2 CPUs.
QUIET = ["trainer.progress=none", "trainer.tensorboard=false", "trainer.num_threads=1"]
EXACT = [*QUIET, "trainer.deterministic=true", "data.batch_size=32", "trainer.checkpoint_every_n_steps=50",
         "model.dropout=0.1", "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.9"]
VARYING = ("wall_time_s", "path", "final:time/epoch_s", "final:train/samples_per_s", "best:time/epoch_s",
           "best:train/samples_per_s")


def submit(started: list, cluster: SlurmCluster, cwd: Path, *args: str) -> subprocess.Popen:
    """`trainkit train -m ARGS` typed on the cluster's login node (this machine, on the cluster's network)."""
    cwd.mkdir(parents=True, exist_ok=True)
    started.append(subprocess.Popen(cluster.command([*TRAINKIT, "train", "-m", *args]), cwd=cwd, env=cluster.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True))
    return started[-1]


def finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        stop(proc)
        raise AssertionError(f"the sweep did not end within {timeout:.0f} s:\n{proc.communicate()[0]}") from None
    assert proc.returncode == 0, out
    return out


def local_run(started: list, cwd: Path, *args: str) -> subprocess.Popen:
    """Training on this machine, run alongside the job: what the job must equal (`-m` among `args`: a sweep)."""
    cwd.mkdir(parents=True, exist_ok=True)
    started.append(subprocess.Popen([*TRAINKIT, "train", *args], cwd=cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, start_new_session=True))
    return started[-1]


@pytest.fixture(autouse=True)
def no_job_left(slurm_cluster):
    """A test that failed halfway leaves no job behind for the next one."""
    yield
    if slurm_cluster.jobs():
        slurm_cluster.run("scancel", "--partition=debug")
        wait_for("the queue to empty", lambda: not slurm_cluster.jobs(), 30, every=0.2)


def job_dirs(cwd: Path) -> list[Path]:
    return sorted(p.parent for p in cwd.glob("outputs/multirun/*/*/*/.hydra"))


def job_log(cwd: Path) -> str:
    """What the SLURM job printed, every run of it: results (submitit's .submitit/<job>/<job>_0_log.out), then what
    it said on standard error (the stop, errors: <job>_0_log.err)."""
    return "\n".join(p.read_text() for suffix in ("out", "err")
                     for p in sorted(cwd.glob(f"outputs/multirun/*/*/.submitit/*/*_0_log.{suffix}")))


def timeless(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(("time/", "train/samples_per_s"))}


def assert_same_run(a: Path, b: Path) -> None:
    """Bitwise-identical final weights, the same epochs' metrics (wall-clock columns aside), each epoch once."""
    wa, wb = (checkpoint.load(d / "checkpoints" / "last.ckpt") for d in (a, b))
    assert all(torch.equal(wa["modules"]["net"][k], wb["modules"]["net"][k]) for k in wa["modules"]["net"]), \
        "final weights differ"
    assert [timeless(r) for r in wa["fit"]["history"]] == [timeless(r) for r in wb["fit"]["history"]]
    epochs = [row["epoch"] for row in csv.DictReader((a / "metrics.csv").open())]
    assert epochs == [str(e) for e in range(1, len(wb["fit"]["history"]) + 1)], "each epoch once in metrics.csv"


def newest_step(run_dir: Path) -> int:
    steps = [int(m.group(1)) for p in run_dir.glob("checkpoints/epoch*-step*.ckpt")
             if (m := re.search(r"step(\d+)", p.name))]
    return max(steps, default=0)


def test_a_sweep_runs_each_job_on_the_cluster_and_summarizes_as_a_local_sweep(slurm_cluster, started, tmp_path):
    args = ["optimizer=sgd,adam", "trainer.max_epochs=2", "data.n_train=512", *QUIET, "trainer.deterministic=true"]
    local = local_run(started, tmp_path, "-m", *args)
    out = finish(submit(started, slurm_cluster, tmp_path / "slurm", *LAUNCHER, *args), timeout=120)
    assert "Submitit 'slurm' sweep output dir" in out and "sweep: 2 jobs, 2 finished" in out, out
    logs = sorted((tmp_path / "slurm").glob("outputs/multirun/*/*/.submitit/*/*_0_log.out"))
    assert len(logs) == 2 and all("Starting with JobEnvironment(job_id=" in p.read_text() for p in logs), \
        "each job ran as a SLURM job of its own"
    finish(local, timeout=120)
    rows = []
    for cwd in (tmp_path / "slurm", tmp_path):
        (summary,) = cwd.glob("outputs/multirun/*/*/sweep_summary.csv")
        rows.append([{k: v for k, v in row.items() if k not in VARYING} for row in csv.DictReader(summary.open())])
    assert rows[0] == rows[1], "the SLURM sweep's summary is the local sweep's"
    assert [r["status"] for r in rows[0]] == ["finished", "finished"]


def test_the_time_limit_warning_saves_requeues_and_the_job_resumes_exactly(slurm_cluster, started, tmp_path):
    """hydra.launcher's signal_delay_s: SLURM sends SIGUSR1 to the job's tasks before its time limit. slurmctld checks
    time limits every 30 s and warns at the first check from 30 s before the warning is due: with a 1-minute limit
    and 20 s of warning, at the first check from 10 s after the job started, when trainkit is ready for it. The job
    is submitted so that this check comes 10-14 s after it started, while it trains (were it later, the job would
    finish unwarned and the test fail saying so). A requeued run warned again stops and resumes again. (This test
    runs second: the sweep above lasts about as long as slurmctld waits for its first check, so it seldom waits.)"""
    run = [*EXACT, "data.n_train=100000", "trainer.max_epochs=12"]
    reference = local_run(started, tmp_path / "reference", *run)
    lead = 15.0  # from typing the command to the check: the submitter (1-3 s), scheduling (<1 s), then 10 s or more
    check = slurm_cluster.next_time_limit_check(after=time.time() + lead)
    time.sleep(max(0.0, check - lead - time.time()))
    sweep = submit(started, slurm_cluster, tmp_path / "slurm", *LAUNCHER, "hydra.launcher.timeout_min=1",
                   "hydra.launcher.signal_delay_s=20", *run)
    out = finish(sweep, timeout=150)
    cwd = tmp_path / "slurm"
    (script,) = cwd.glob("outputs/multirun/*/*/.submitit/.submission_file_*.sh")
    assert "#SBATCH --signal=USR1@20" in script.read_text(), "hydra.launcher asks SLURM for SIGUSR1"
    log = job_log(cwd)
    assert "stopped by SIGUSR1" in log and "SLURM requeued this job (restart 1): continuing" in log, log + out
    (run_dir,) = job_dirs(cwd)
    finish(reference, timeout=120)
    assert_same_run(run_dir, run_dirs(tmp_path / "reference")[0])


def test_a_job_of_two_tasks_trains_data_parallel_in_one_run_directory(slurm_cluster, started, tmp_path):
    run = [*QUIET, "trainer.max_epochs=2", "model.dropout=0.0"]
    reference = local_run(started, tmp_path / "reference", *run, "data.batch_size=64")
    out = finish(submit(started, slurm_cluster, tmp_path / "slurm", *LAUNCHER, "hydra.launcher.tasks_per_node=2",
                        "hydra.launcher.timeout_min=5", *run, "data.batch_size=32"), timeout=120)
    assert "sweep: 1 jobs, 1 finished" in out, out
    cwd = tmp_path / "slurm"
    (run_dir,) = job_dirs(cwd)
    assert "data-parallel: 2 processes, global batch 2 × 32" in job_log(cwd)
    assert len(list(cwd.glob("outputs/multirun/*/*/.submitit/*/*_1_log.out"))) == 1, "a second task ran"
    finish(reference, timeout=120)
    (one,) = run_dirs(tmp_path / "reference")
    a, b = (json.loads((d / "summary.json").read_text()) for d in (run_dir, one))
    for key in ("train/loss", "val/loss", "val/mae"):
        assert abs(a["final"][key] - b["final"][key]) <= 1e-4 * abs(b["final"][key]) + 1e-6, key
    assert a["steps"] == b["steps"] and abs(a["test"]["test/loss"] - b["test"]["test/loss"]) <= 1e-4


def test_scancel_usr1_saves_requeues_and_the_requeued_job_resumes_exactly(slurm_cluster, started, tmp_path):
    """`scancel --batch --signal=USR1`: the batch script passes the signal on to trainkit, which saves and runs the real
    `scontrol requeue`; the requeued job continues in its run directory, bitwise as if never stopped."""
    run = [*EXACT, "data.n_train=40000", "trainer.max_epochs=6"]
    reference = local_run(started, tmp_path / "reference", *run)
    sweep = submit(started, slurm_cluster, tmp_path / "slurm", *LAUNCHER, "hydra.launcher.timeout_min=5", *run)
    cwd = tmp_path / "slurm"
    (run_dir,) = wait_for("the job's first checkpoint", lambda: [
        d for d in job_dirs(cwd) if newest_step(d)], timeout=90, proc=sweep)
    (job,) = slurm_cluster.jobs()
    signalled = time.time()
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)
    stopped = wait_for("the job saved and requeued itself", lambda: json.loads(
        (run_dir / "summary.json").read_text())["steps"] if (run_dir / "summary.json").exists() else 0, 30, sweep)
    wait_for("the requeued job's first step", lambda: newest_step(run_dir) > stopped, 90, sweep, every=0.01)
    cycle = time.time() - signalled
    finish(sweep, timeout=120)
    log = job_log(cwd)
    assert "stopped by SIGUSR1" in log and f"requeued SLURM job {job}" in log, log
    assert "SLURM requeued this job (restart 1): continuing" in log and f"(step {stopped})" in log, log
    assert job_dirs(cwd) == [run_dir], "the requeued job continued in its own run directory"
    finish(reference, timeout=120)
    assert_same_run(run_dir, run_dirs(tmp_path / "reference")[0])
    NOTES.append(f"SLURM requeue cycle: {cycle:.1f} s from scancel --batch --signal=USR1 to the requeued job's "
                 f"first checkpoint after its first step (at most 50 steps later)")
