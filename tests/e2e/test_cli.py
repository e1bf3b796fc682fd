"""End-to-end: the real `trainkit` command in a subprocess, on tiny data in the real on-disk formats."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import torch
from conftest import FAST, run_cli, run_dirs


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def assert_run_dir(run_dir: Path, epochs: int, metrics: tuple[str, ...]) -> list[dict[str, str]]:
    """The contract every run directory keeps."""
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    rows = read_metrics(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    for key in ("epoch", "step", "time/epoch_s", "train/samples_per_s", *metrics):
        assert key in rows[0], f"{key} missing from metrics.csv columns {list(rows[0])}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == epochs
    return rows


def test_help_lists_commands_without_importing_torch():
    code = "import sys; from trainkit.cli import main; main(['--help']); assert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "train" in out and "eval" in out


def test_unknown_command_is_refused(tmp_path):
    proc = run_cli("fly", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "unknown command 'fly'" in proc.stderr


def test_default_train_then_eval(tmp_path):
    """`trainkit train` with no arguments: synthetic regression, MLP; then eval its best checkpoint."""
    proc = run_cli("train", *FAST, cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    assert f"run directory: {run_dir.relative_to(tmp_path)}" in proc.stdout
    rows = assert_run_dir(run_dir, 10, ("train/loss", "val/loss", "val/mae", "train/mae"))
    assert float(rows[-1]["val/loss"]) < 0.5 * float(rows[0]["val/loss"]), "the default run must learn"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["monitor"] == "val/loss" and "test/loss" in summary["test"]
    # Floats at full precision: the CSV holds exactly what summary.json holds.
    assert float(rows[-1]["val/loss"]) == summary["final"]["val/loss"]

    ckpt = run_dir / "checkpoints" / "best.ckpt"
    proc = run_cli("eval", f"ckpt={ckpt}", cwd=tmp_path)
    (metrics_file,) = (tmp_path / "outputs" / "eval").glob("*/*/metrics.json")
    result = json.loads(metrics_file.read_text())
    assert result["metrics"]["test/loss"] == pytest.approx(summary["test"]["test/loss"], rel=1e-5)
    assert "test/mae" in proc.stdout


# The GAN's convolutions narrowed: the tests check the wiring, and the full widths cost 10 s a run here.
SMALL_GAN = ["model.g_channels=[16,8]", "model.d_channels=[8,16]"]


@pytest.mark.parametrize("model,layout", [("mlp", "kaggle"), ("cnn", "kaggle"), ("gan", "kaggle"), ("cnn", "plain")])
def test_mnist_csv_every_model(tmp_path, mnist_files, model, layout):
    train, test = mnist_files[f"{layout}_train"], mnist_files[f"{layout}_test"]
    run_cli("train", f"model={model}", "data=mnist_csv", f"data.train_csv={train}", f"data.test_csv={test}",
            "data.batch_size=32", "trainer.max_epochs=2", *SMALL_GAN * (model == "gan"), *FAST, cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    if model == "gan":
        assert_run_dir(run_dir, 2, ("train/d_loss", "train/g_loss", "val/mmd"))
        assert (run_dir / "samples" / "epoch_001.png").is_file() and (run_dir / "samples" / "epoch_002.png").is_file()
    else:
        rows = assert_run_dir(run_dir, 2, ("train/loss", "val/loss", "val/acc"))
        assert float(rows[-1]["val/acc"]) > 0.5, "tiny learnable data: far above 10% chance after 2 epochs"


@pytest.mark.parametrize("model", ["mlp", "cnn", "gan"])
def test_cifar10_every_model(tmp_path, cifar_root, model):
    run_cli("train", f"model={model}", "data=cifar10", f"data.root={cifar_root}", "data.batch_size=32",
            "trainer.max_epochs=1", *SMALL_GAN * (model == "gan"), *FAST, cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    metrics = ("val/mmd",) if model == "gan" else ("val/acc",)
    assert_run_dir(run_dir, 1, metrics)


def test_gan_on_synthetic_points(tmp_path):
    run_cli("train", "model=gan", "trainer.max_epochs=2", "data.n_train=512", "model.g_hidden=[64]",
            "model.d_hidden=[64]", *FAST, cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    assert_run_dir(run_dir, 2, ("train/d_loss", "train/g_loss", "val/mmd"))
    assert (run_dir / "samples" / "epoch_002.png").is_file()


def test_cnn_on_regression_data_is_refused_clearly(tmp_path):
    proc = run_cli("train", "model=cnn", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "model=cnn does not fit data=synthetic_regression" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not run_dirs(tmp_path), "no run directory left half-made"


def test_missing_train_csv_names_the_key(tmp_path):
    proc = run_cli("train", "data=mnist_csv", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "data.train_csv is required" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_bf16_mixed_on_cpu(tmp_path, mnist_files):
    run_cli("train", "model=cnn", "data=mnist_csv", f"data.train_csv={mnist_files['kaggle_train']}",
            "trainer.precision=bf16-mixed", "trainer.max_epochs=1", *FAST, cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    rows = assert_run_dir(run_dir, 1, ("val/acc",))
    assert float(rows[0]["train/loss"]) == float(rows[0]["train/loss"])  # finite, not NaN


def test_multirun_one_job_directory_each(tmp_path, mnist_files):
    run_cli("train", "-m", "optimizer=sgd,adam", "model=mlp,cnn", "data=mnist_csv",
            f"data.train_csv={mnist_files['kaggle_train']}", "trainer.max_epochs=1", "trainer.tensorboard=false",
            *FAST, cwd=tmp_path)
    jobs = sorted((tmp_path / "outputs" / "multirun").glob("*/*/[0-9]*"))
    # Named by number and overrides, data paths left out: TensorBoard's run names say what each job changed.
    assert [j.name.split("_", 1)[0] for j in jobs] == ["0", "1", "2", "3"]
    for job in jobs:
        given = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert job.name.split("_", 1)[1] == ",".join(sorted(o for o in given if not o.startswith("data.train_csv")))
    seen = set()
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        seen.add(tuple(sorted(line.strip("- \n") for line in overrides.splitlines() if "model=" in line or "optimizer=" in line)))
        assert (job / "checkpoints" / "best.ckpt").is_file() and (job / "metrics.csv").is_file()
    assert len(seen) == 4


def test_eval_override_changes_the_stored_config(tmp_path, mnist_files):
    run_cli("train", "model=mlp", "data=mnist_csv", f"data.train_csv={mnist_files['kaggle_train']}",
            f"data.test_csv={mnist_files['kaggle_test']}", "trainer.max_epochs=1", *FAST, cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    # The headerless test file has other images: an override must really change what is evaluated.
    run_cli("eval", f"ckpt={ckpt}", f"data.test_csv={mnist_files['plain_test']}", cwd=tmp_path)
    (metrics_file,) = (tmp_path / "outputs" / "eval").glob("*/*/metrics.json")
    result = json.loads(metrics_file.read_text())
    assert result["samples"] == 100 and "test/acc" in result["metrics"]


def test_eval_of_a_missing_checkpoint_is_a_clear_error(tmp_path):
    proc = run_cli("eval", "ckpt=nope.ckpt", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "nope.ckpt does not exist" in proc.stderr


def test_hydra_flags_pass_through(tmp_path):
    proc = run_cli("train", "model=cnn", "--cfg", "job", cwd=tmp_path)
    assert "name: cnn" in proc.stdout and not (tmp_path / "outputs").exists()
    proc = run_cli("train", "--help", cwd=tmp_path)
    groups = dict(line.strip().split(": ", 1) for line in proc.stdout.split("== Config ==")[0].splitlines()
                  if line.startswith(("optimizer:", "scheduler:", "model:")))
    assert {"adam", "adagrad", "nadam", "sgd"} <= set(groups["optimizer"].split(", "))
    assert {"cosine", "ExponentialLR", "CyclicLR"} <= set(groups["scheduler"].split(", "))  # torch's, by class name
    assert {"mlp", "cnn", "gan"} <= set(groups["model"].split(", "))


def test_user_config_dir_adds_an_option(tmp_path):
    (tmp_path / "my" / "model").mkdir(parents=True)
    (tmp_path / "my" / "model" / "wide.yaml").write_text("name: mlp\nhidden: [64, 64]\ndropout: 0.1\n")
    proc = run_cli("train", "--config-dir", str(tmp_path / "my"), "model=wide", "--cfg", "job", cwd=tmp_path)
    assert "- 64" in proc.stdout and "dropout: 0.1" in proc.stdout


def test_checkpoint_loads_with_weights_only(tmp_path):
    run_cli("train", "trainer.max_epochs=1", *FAST, cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    payload = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert payload["format"] == "trainkit" and "model:" in payload["config"]
    assert set(payload) >= {"modules", "optimization", "fit", "rng", "versions", "best"}


def test_shell_completion_goes_through_the_subcommand(tmp_path):
    env = {"COMP_LINE": "trainkit tr"}
    assert run_cli("-sc", "query=bash", cwd=tmp_path, env=env).stdout.split() == ["train"]
    env = {"COMP_LINE": "trainkit train model="}
    completed = run_cli("-sc", "query=bash", cwd=tmp_path, env=env).stdout.split()
    assert {"model=cnn", "model=gan", "model=mlp", "model=torchvision"} <= set(completed), completed
    assert all(c.startswith("model=") for c in completed)
    script = run_cli("train", "-sc", "install=bash", cwd=tmp_path).stdout
    assert "hydra_bash_completion" in script


def test_readme_test_command_is_what_ci_runs():
    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = 'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && .venv/bin/pytest -q'
    assert command in readme and command in ci
