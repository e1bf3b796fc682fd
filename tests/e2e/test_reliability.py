"""Fault injection: each failure happens for real (signals, kill -9, NaN, malicious files, disk limits),
and each test asserts that nothing was lost and nothing lies."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import TRAINKIT, run_cli, run_dirs
from torch import nn

from trainkit.data.base import DataMeta, Split
from trainkit.data.loader import BatchLoader
from trainkit.engine import checkpoint
from trainkit.engine.loop import FitState, Hooks, NonFiniteLossError, fit
from trainkit.engine.optimization import Optimization, Precision
from trainkit.engine.settings import TrainerSettings
from trainkit.tasks.classification import ClassificationTask

# Shuffling, dropout, a scheduler and fp16 GradScaler state, deterministic kernels: all must survive a resume.
EXACT = ["model.dropout=0.2", "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.7",
         "trainer.precision=16-mixed", "trainer.deterministic=true", "data.n_train=1536", "data.batch_size=32",
         "trainer.progress=none", "trainer.tensorboard=false", "trainer.max_epochs=3", "model.hidden=[64]"]
TIME_INDEPENDENT = lambda row: {k: v for k, v in row.items() if not k.startswith(("time/", "train/samples_per_s"))}  # noqa: E731


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(ckpt)["modules"]["net"]


def assert_same_run(a: Path, b: Path) -> None:
    """Bitwise-identical final weights and the same per-epoch metrics (wall-clock columns aside)."""
    wa, wb = weights(a / "checkpoints" / "last.ckpt"), weights(b / "checkpoints" / "last.ckpt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "final weights differ"
    ha = [TIME_INDEPENDENT(r) for r in checkpoint.load(a / "checkpoints" / "last.ckpt")["fit"]["history"]]
    hb = [TIME_INDEPENDENT(r) for r in checkpoint.load(b / "checkpoints" / "last.ckpt")["fit"]["history"]]
    assert ha == hb


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The uninterrupted run, with a checkpoint every 7 steps kept (to resume from any of them)."""
    cwd = tmp_path_factory.mktemp("reference")
    run_cli("train", *EXACT, "trainer.checkpoint_every_n_steps=7", "trainer.keep_last_k=100", cwd=cwd)
    (run_dir,) = run_dirs(cwd)
    return run_dir


def test_resume_from_a_mid_epoch_checkpoint_is_exact(reference_run, tmp_path):
    mid = reference_run / "checkpoints" / "epoch002-step0000063.ckpt"  # 48 steps an epoch: batch 15 of epoch 2
    assert checkpoint.load(mid)["fit"]["batch"] == 15
    copy = tmp_path / "outputs" / "2026-01-01" / "00-00-00"
    shutil.copytree(reference_run, copy)
    for f in ("last.ckpt", "best.ckpt"):
        (copy / "checkpoints" / f).unlink()
    (copy / "metrics.csv").unlink()
    run_cli("train", *EXACT, f"resume={copy / 'checkpoints' / mid.name}", cwd=tmp_path)
    assert_same_run(reference_run, copy)
    rows = (copy / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"], "rows of the epochs before the checkpoint restored"


def test_sigterm_mid_epoch_saves_exits_143_and_resumes_exactly(reference_run, tmp_path):
    proc = subprocess.Popen([*TRAINKIT, "train", *EXACT], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob("outputs/*/*/checkpoints/epoch001-*.ckpt")):  # in epoch 2 by now
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.01)
    # Freeze it first, so the signal lands in epoch 2 however fast this machine is.
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert "stopped by SIGTERM" in out and "Traceback" not in out
    (run_dir,) = run_dirs(tmp_path)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["fit"]["step"] >= 48
    out = run_cli("train", *EXACT, "resume=auto", cwd=tmp_path).stdout
    assert f"resuming {run_dir.relative_to(tmp_path)}" in out
    assert run_dirs(tmp_path) == [run_dir], "the resumed run continues in its own directory"
    assert_same_run(reference_run, run_dir)


def test_sigint_saves_and_exits_130(tmp_path):
    proc = subprocess.Popen([*TRAINKIT, "train", "data.n_train=200000", "trainer.progress=none"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_training(proc, tmp_path)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    (run_dir,) = run_dirs(tmp_path)
    assert checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["fit"]["batch"] > 0


def test_second_sigint_stops_at_once(tmp_path):
    proc = subprocess.Popen([*TRAINKIT, "train", "data.n_train=200000", "trainer.progress=none"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_training(proc, tmp_path)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode in (130, -signal.SIGINT)


def _wait_for_training(proc: subprocess.Popen, cwd: Path) -> None:
    deadline = time.time() + 120
    while not list(cwd.glob("outputs/*/*/checkpoints")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(1.0)


@pytest.mark.slow
def test_kill_9_during_saves_never_loses_last(tmp_path):
    """A checkpoint every step of a big model: SIGKILL lands during saves; `last` always loads."""
    args = [*TRAINKIT, "train", "model.hidden=[2048,2048]", "trainer.checkpoint_every_n_steps=1",
            "trainer.progress=none", "trainer.tensorboard=false", "hydra.run.dir=outputs/x/run"]
    for delay in (2.0, 2.6, 3.3, 4.1):
        proc = subprocess.Popen(args if delay == 2.0 else [*args, "resume=outputs/x/run"], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_training(proc, tmp_path)
        time.sleep(delay - 1.5)
        proc.kill()
        proc.wait()
        last = tmp_path / "outputs" / "x" / "run" / "checkpoints" / "last.ckpt"
        if last.exists():
            assert checkpoint.load(last)["fit"]["step"] >= 1
    run_cli("train", *args[3:], "resume=outputs/x/run", "trainer.max_epochs=1", cwd=tmp_path, check=False)


class NaNAt(ClassificationTask):
    """A classifier whose loss is NaN at chosen steps (a real NaN in the real backward pass)."""

    def __init__(self, net, steps):
        super().__init__(net, DataMeta(name="toy", kind="classification", in_shape=(4,), num_outputs=2))
        self.steps, self.step = set(steps), 0

    def train_step(self, batch, opt):
        self.step += 1
        if self.step in self.steps:
            x, y = batch
            batch = (x * float("nan"), y)
        return super().train_step(batch, opt)


def _fit_toy(tmp_path, task, on_nan):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    split = Split(x, (x[:, 0] > 0).long())
    meta = DataMeta(name="toy", kind="classification", in_shape=(4,), num_outputs=2)
    opt = Optimization({"main": torch.optim.SGD(task.net.parameters(), lr=0.1)}, Precision("32", torch.device("cpu")),
                       skip_nonfinite=on_nan == "skip")
    manager = checkpoint.CheckpointManager(tmp_path / "ckpt", task.monitor, task.monitor_mode)
    state = FitState()
    payload = lambda: checkpoint.make_payload("seed: 0\n", task.modules(), opt, state, manager,
                                                     checkpoint.data_section(meta, split))  # noqa: E731
    hooks = Hooks(save_epoch=lambda m: manager.save_epoch(payload, m, state.epoch, state.step),
                  save_step=lambda: manager.save_step(payload, state.epoch + 1, state.step))

    class Quiet:
        start_epoch = step = end_epoch = images = lambda *a: None

    settings = TrainerSettings(max_epochs=3, log_every_n_steps=50, on_nan=on_nan)
    loader = BatchLoader(split, meta, 32, torch.device("cpu"), shuffle=True)
    fit(task, loader, BatchLoader(split, meta, 64, torch.device("cpu")), opt, Quiet(), settings, hooks, state)
    return state, manager


def test_nan_at_a_chosen_step_stops_naming_it_and_saves_nothing_after(tmp_path):
    task = NaNAt(nn.Linear(4, 2), steps={13})  # epoch 2, batch 5 (8 batches an epoch)
    with pytest.raises(NonFiniteLossError, match="at step 13\\."):
        _fit_toy(tmp_path, task, "stop")
    saved = checkpoint.load(tmp_path / "ckpt" / "last.ckpt")
    assert saved["fit"]["epoch"] == 1 and all(torch.isfinite(v).all() for v in saved["modules"]["net"].values())


def test_on_nan_skip_drops_that_update_and_goes_on(tmp_path):
    task = NaNAt(nn.Linear(4, 2), steps={3, 13})
    state, manager = _fit_toy(tmp_path, task, "skip")
    assert state.epoch == 3 and state.history[0]["train/skipped_steps"] == 1.0
    assert all(torch.isfinite(p).all() for p in task.net.parameters())
    assert all(r["val/acc"] == r["val/acc"] for r in state.history) and manager.best is not None


def test_diverging_run_fails_cleanly_through_the_cli(tmp_path):
    proc = run_cli("train", "optimizer=sgd", "optimizer.lr=1e12", "trainer.progress=none", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "training diverged" in proc.stderr and "at step " in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    (run_dir,) = run_dirs(tmp_path)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


def test_malicious_checkpoint_through_eval_never_runs(tmp_path):
    target = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {target}",))

    torch.save({"format": "trainkit", "config": "seed: 0\n", "x": Payload()}, tmp_path / "evil.ckpt")
    for cmd in (("eval", "ckpt=evil.ckpt"), ("train", "resume=evil.ckpt")):
        proc = run_cli(*cmd, cwd=tmp_path, check=False, env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
        assert proc.returncode == 1 and "system" in proc.stderr, proc.stderr
        assert not target.exists()


def test_resume_with_another_model_is_refused_with_a_diff(tmp_path):
    run_cli("train", "trainer.max_epochs=1", "trainer.progress=none", cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    proc = run_cli("train", "model.hidden=[8]", f"resume={run_dir}", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "model.hidden: [500] → [8]" in proc.stderr
    out = run_cli("train", "trainer.max_epochs=2", f"resume={run_dir}", "trainer.progress=none", cwd=tmp_path).stdout
    assert "trainer.max_epochs 1 → 2" in out
    assert run_dirs(tmp_path) == [run_dir]


def test_a_second_writer_is_refused(tmp_path):
    run_dir = tmp_path / "outputs" / "a" / "b"
    from trainkit.rundirs.claim import lock

    with lock(run_dir):
        proc = run_cli("train", f"hydra.run.dir={run_dir}", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "in use by another trainkit process" in proc.stderr


def test_runs_started_in_the_same_second_get_distinct_directories(tmp_path):
    from trainkit.rundirs.claim import claim

    assert [Path(claim(str(tmp_path / "o" / "12-00-00"))).name for _ in range(3)] == ["12-00-00", "12-00-00_1", "12-00-00_2"]


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    return apply


def test_failed_save_keeps_the_previous_checkpoint_and_stops(tmp_path):
    args = ["train", "trainer.progress=none", "trainer.tensorboard=false", "model.hidden=[64]", "trainer.max_epochs=2"]
    run_cli(*args, cwd=tmp_path / "probe" if (tmp_path / "probe").mkdir() is None else tmp_path)
    (probe,) = run_dirs(tmp_path / "probe")
    sizes = [f.stat().st_size for f in sorted((probe / "checkpoints").glob("epoch*.ckpt"))]
    assert sizes[1] > sizes[0]  # the history in epoch 2's checkpoint is one row longer
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([*TRAINKIT, *args], cwd=tmp_path, capture_output=True, text=True, env=env,
                          preexec_fn=_limit_file_size((sizes[0] + sizes[1]) // 2))
    assert proc.returncode == 1 and "could not write checkpoint" in proc.stderr, proc.stdout + proc.stderr
    (run_dir,) = run_dirs(tmp_path)
    assert checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["fit"]["epoch"] == 1
    assert not list((run_dir / "checkpoints").glob(".*tmp")), "the temporary file is removed"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


def test_full_disk_is_refused_before_the_first_step(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs privileges this machine does not give")
    try:
        proc = run_cli("train", f"hydra.run.dir={mnt}/run", cwd=tmp_path, check=False)
        assert proc.returncode == 1 and "not enough free disk space" in proc.stderr, proc.stderr
        assert "epoch 1/" not in proc.stdout, "refused before training"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_checkpoint_on_a_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.ckpt")
    proc = run_cli("eval", "ckpt=pipe.ckpt", cwd=tmp_path, check=False, timeout=60)
    assert proc.returncode == 1 and "not a regular file" in proc.stderr
