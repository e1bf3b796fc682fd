"""`trainkit sweep resume DIR` through the real CLI: a 4-job sweep stopped by Ctrl-C during job 2 is finished, and
the interrupted job ends with exactly the weights of a job that was never stopped."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from conftest import stop_sweep_during_job, job_dir, run_cli, run_dirs

JOB = ["trainer.max_epochs=2", "data.n_train=16384", "trainer.checkpoint_every_n_steps=16", "trainer.progress=none",
       "trainer.tensorboard=false"]


def rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "sweep_summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {f"{m}.{k}": v for m, state in payload["modules"].items() for k, v in state.items()}


def test_a_sweep_stopped_during_job_2_is_finished_and_job_2_resumes_exactly(tmp_path):
    sweep_dir = tmp_path / "outputs" / "multirun" / "s"
    stopped = stop_sweep_during_job(sweep_dir, 2, ["optimizer.lr=0.001,0.002,0.003,0.004", *JOB], tmp_path)
    assert stopped.returncode == 130, stopped.stdout
    before = rows(sweep_dir)
    assert [(r["job"], r["status"]) for r in before] in ([("0", "finished"), ("1", "finished"), ("2", "interrupted")],
                                                         [("1", "finished"), ("0", "finished"), ("2", "interrupted")])
    assert not list(sweep_dir.glob("3_*"))
    kept = {r["job"]: r for r in before if r["status"] == "finished"}

    out = run_cli("sweep", "resume", str(sweep_dir), cwd=tmp_path).stdout
    assert "job 0: finished, kept" in out and "job 2: interrupted, resuming" in out and "job 3: not started, running" in out
    after = {r["job"]: r for r in rows(sweep_dir)}
    assert sorted(after) == ["0", "1", "2", "3"] and all(r["status"] == "finished" for r in after.values())
    for job, row in kept.items():  # finished jobs were not run again
        assert after[job]["best_value"] == row["best_value"] and after[job]["wall_time_s"] == row["wall_time_s"]
    assert after["2"]["overrides"] == before[2]["overrides"]  # the same row, not a resume's overrides
    assert "resume=" not in after["2"]["overrides"]
    assert (sweep_dir / "sweep_curves.png").is_file()
    assert not (sweep_dir / ".resume").exists()

    run_cli("train", "optimizer.lr=0.003", *JOB, cwd=tmp_path)  # job 2, never stopped
    (uninterrupted,) = run_dirs(tmp_path)
    resumed, reference = weights(job_dir(sweep_dir, 2)), weights(uninterrupted)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference), "bitwise equal"
    assert json.loads((job_dir(sweep_dir, 2) / "summary.json").read_text())["steps"] == \
        json.loads((uninterrupted / "summary.json").read_text())["steps"]


def test_failed_jobs_rerun_only_with_retry_failed(tmp_path):
    sweep_dir = tmp_path / "outputs" / "multirun" / "f"
    # lr=1e6 diverges: a failed job; the others finish.
    proc = run_cli("train", "-m", "optimizer=sgd", "optimizer.lr=0.01,1e6", "trainer.max_epochs=1", "data.n_train=256",
                   "trainer.progress=none", "trainer.tensorboard=false", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path,
                   check=False)
    assert proc.returncode == 1
    assert [r["status"] for r in rows(sweep_dir)] == ["finished", "failed"]
    proc = run_cli("sweep", "resume", str(sweep_dir), cwd=tmp_path, check=False)
    assert "job 1: failed, kept (--retry-failed runs it again)" in proc.stdout and proc.returncode == 1
    proc = run_cli("sweep", "resume", str(sweep_dir), "--retry-failed", cwd=tmp_path, check=False)
    assert "job 1: failed, running" in proc.stdout
    assert [r["status"] for r in rows(sweep_dir)] == ["finished", "failed"]  # it diverges again: still its row


def test_resume_of_a_directory_that_is_not_a_sweep_says_so(tmp_path):
    proc = run_cli("sweep", "resume", str(tmp_path), cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "has no multirun.yaml" in proc.stderr
