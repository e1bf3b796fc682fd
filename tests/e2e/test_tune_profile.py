"""`trainkit tune` and `trainkit profile` through the real command line: what they print and write, that they touch
nothing but their own directory, that tune's suggested learning rate trains the MLP preset, and their refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import FAST, run_cli


def _data(files: dict[str, Path]) -> list[str]:
    return [f"data.train_csv={files['kaggle_train']}", f"data.test_csv={files['kaggle_test']}"]


def _trained_acc(tmp_path: Path, files: dict[str, Path], *extra: str) -> float:
    run_dir = tmp_path / "runs" / "_".join(e.replace("=", "-") for e in extra) if extra else tmp_path / "runs" / "as"
    run_cli("train", "experiment=mnist_mlp", *_data(files), "trainer.max_epochs=3", *FAST, *extra,
            f"hydra.run.dir={run_dir}", cwd=tmp_path)
    return json.loads((run_dir / "summary.json").read_text())["test"]["test/acc"]


def test_tune_suggests_a_batch_and_an_lr_that_trains_the_mlp_preset(tmp_path, mnist_files):
    proc = run_cli("tune", "experiment=mnist_mlp", *_data(mnist_files), "tune.steps=60", "tune.max_batch=128",
                   "tune.batch_steps=2", cwd=tmp_path)
    (tune_dir,) = (tmp_path / "outputs" / "tune").glob("*/*")
    result = json.loads((tune_dir / "tune.json").read_text())
    assert (tune_dir / "lr_range.png").stat().st_size > 10_000
    assert [t["batch_size"] for t in result["batch"]["trials"]] == [8, 16, 32, 64, 128]  # powers of two on a CPU
    lr = result["lr"]
    assert lr["batch_size"] == result["batch"]["suggestion"], "the range test runs at the batch it found"
    assert lr["losses"][0] > 1.8, "it starts from the untrained model (ln 10 = 2.3), not from the finder's trials"
    assert 1e-7 <= lr["lrs"][0] < lr["suggestion"] < lr["lrs"][-1]
    assert lr["stopped"].startswith(("reached the last rate", "the smoothed loss passed", "the loss became"))
    said = re.search(r"use: (data\.batch_size=\d+) (optimizer\.lr=\S+)", proc.stdout)
    assert said is not None, proc.stdout
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["tune"], "tune writes only its own directory"
    # The suggestion trains the preset (at its own batch) as well as its shipped rate does on this data.
    suggested = _trained_acc(tmp_path, mnist_files, said.group(2))
    shipped = _trained_acc(tmp_path, mnist_files)
    assert suggested > 0.3 and suggested >= shipped - 0.1, (suggested, shipped)


def test_tune_refuses_bad_options_in_one_paragraph_and_leaves_nothing(tmp_path, mnist_files):
    cases = {("tune.lr_min=1", "tune.lr_max=0.1"): "tune.lr_min=1 must be below tune.lr_max=0.1",
             ("tune.steps=0",): "tune.steps=0 must be a whole number of at least 5",
             ("tune.mode=fast",): "tune.mode=fast is not one of lr, batch, both"}
    for words, message in cases.items():
        proc = run_cli("tune", "experiment=mnist_mlp", *_data(mnist_files), *words, cwd=tmp_path, check=False)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith("error: ") and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not list((tmp_path / "outputs").glob("tune/*/*")), "a refused tune leaves no directory"


def test_tune_says_a_gan_has_no_single_loss_to_sweep(tmp_path, mnist_files):
    proc = run_cli("tune", "experiment=mnist_gan", *_data(mnist_files), "tune.mode=lr", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "steps 2 optimizers" in proc.stderr and "tune.mode=batch" in proc.stderr, proc.stderr


def test_profile_splits_the_time_by_phase_and_writes_a_trace(tmp_path, mnist_files):
    proc = run_cli("profile", "experiment=mnist_fast", *_data(mnist_files), "data.batch_size=16", "profile.steps=6",
                   "profile.warmup=2", "profile.val_batches=1", "profile.peak_seconds=0.1", *FAST, cwd=tmp_path)
    (run_dir,) = (tmp_path / "outputs" / "profile").glob("*/*")
    result = json.loads((run_dir / "profile.json").read_text())
    phases = result["phases_s"]
    assert {"data", "step", "backward", "optimizer", "logging", "validation", "checkpoint"} <= set(phases)
    assert result["phase_counts"]["step"] == 6 and result["steps"] == 6
    assert abs(sum(phases.values()) - result["wall_s"]) < 1e-6 * max(1.0, result["wall_s"]) + 1e-3
    assert result["flops_per_step"] > 0 and 0 < result["share_of_peak"] < 1
    trace = json.loads((run_dir / "trace.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"trainkit/step", "trainkit/backward", "trainkit/data", "trainkit/checkpoint"} <= names
    for row in ("data", "forward", "backward", "optimizer", "logging", "validation", "checkpoint"):
        assert row in proc.stdout
    assert "samples/s" in proc.stdout and "of this device's measured float32 matmul peak" in proc.stdout
    assert "USDT" not in proc.stderr and "profiler_start" not in proc.stderr, "no Kineto chatter"


def test_profile_refuses_more_steps_than_an_epoch_has(tmp_path, mnist_files):
    proc = run_cli("profile", "experiment=mnist_mlp", *_data(mnist_files), "profile.steps=500", cwd=tmp_path,
                   check=False)
    assert proc.returncode == 1 and "lower profile.steps" in proc.stderr, proc.stderr
    assert not list((tmp_path / "outputs").glob("profile/*/*"))
