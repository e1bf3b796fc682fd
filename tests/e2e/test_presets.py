"""Every shipped experiment and debug preset, composed from the real configs and shrunk: each must learn."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from rich.console import Console

from trainkit.cli.compose import config_dir
from trainkit.commands import Context
from trainkit.commands.train import train

QUIET = ["trainer.progress=none", "trainer.tensorboard=false"]


def run(compose, tmp_path: Path, *overrides: str) -> dict:
    cfg = compose(*overrides, *QUIET)
    return train(cfg, Context(tmp_path / "run", console=Console(file=io.StringIO())))


def column(tmp_path: Path, name: str) -> list[float]:
    with (tmp_path / "run" / "metrics.csv").open() as f:
        return [float(row[name]) for row in csv.DictReader(f)]


def data_args(name: str, mnist_files, cifar_root) -> list[str]:
    if name.startswith("mnist"):
        return [f"data.train_csv={mnist_files['kaggle_train']}", f"data.test_csv={mnist_files['kaggle_test']}"]
    if name.startswith("cifar10"):
        return [f"data.root={cifar_root}"]
    return []


def test_every_shipped_experiment_has_a_smoke_test():
    shipped = {p.stem for p in (config_dir() / "experiment").glob("*.yaml")}
    # mnist_fast and cifar10_fast: tests/test_fast_recipes.py; painter_gan: tests/e2e/test_painter.py
    assert shipped == {"mnist_mlp", "mnist_cnn", "cifar10_cnn", "mnist_gan", "regression_mlp", "mnist_fast", "cifar10_fast",
                       "painter_gan"}


@pytest.mark.parametrize("name,epochs", [("mnist_mlp", 3), ("mnist_cnn", 3), ("cifar10_cnn", 4)])
def test_classification_presets_learn(compose, tmp_path, mnist_files, cifar_root, name, epochs):
    summary = run(compose, tmp_path, f"experiment={name}", f"trainer.max_epochs={epochs}",
                  *data_args(name, mnist_files, cifar_root))
    losses = column(tmp_path, "train/loss")
    assert losses[-1] < 0.8 * losses[0], "the training loss falls"
    assert summary["best"]["val/acc"] > 0.3 and summary["test"]["test/acc"] > 0.3, "far above the 10% of chance"


def test_regression_preset_learns(compose, tmp_path):
    summary = run(compose, tmp_path, "experiment=regression_mlp", "trainer.max_epochs=8")
    first, last = summary["final"], summary["best"]
    assert last["val/loss"] < 0.05, "y = x² on [-2, 2] has variance ~1.4: the fit explains almost all of it"
    assert first["val/mae"] < 0.2


def test_gan_preset_learns(compose, tmp_path, mnist_files):
    # The preset's EMA (~1,000 updates) and learning rate are sized for its 34,000 updates; these 75 get an EMA of
    # ~10 updates and a 5x learning rate, so the samples can move (at 2e-4 they barely do in 75 steps).
    data = [*data_args("mnist_gan", mnist_files, None), "trainer.ema_decay=0.9", "optimizer.lr=0.001"]
    # The baseline: the same preset after a single update, i.e. a generator that has learnt nothing yet.
    start = run(compose, tmp_path / "one_step", "experiment=mnist_gan", "trainer.max_epochs=1",
                "trainer.limit_train_batches=1", *data)["final"]["val/mmd"]
    run(compose, tmp_path, "experiment=mnist_gan", "trainer.max_epochs=3", "data.batch_size=16", *data)
    mmd = column(tmp_path, "val/mmd")
    assert mmd[-1] < 0.6 * start, "generated samples move towards the real ones"
    assert (tmp_path / "run" / "samples" / "epoch_003.png").is_file()


def test_debug_fast_dev_run_writes_no_checkpoint(compose, tmp_path):
    summary = run(compose, tmp_path, "debug=fast_dev_run")
    assert summary["epochs"] == 1 and summary["steps"] == 3
    assert not list((tmp_path / "run").rglob("*.ckpt")) and "test/loss" in summary["test"]


def test_debug_overfit_reaches_near_zero_loss(compose, tmp_path, mnist_files):
    summary = run(compose, tmp_path, "debug=overfit", "model=mlp", "data=mnist_csv", "data.batch_size=16",
                  "trainer.max_epochs=40", *data_args("mnist", mnist_files, None))
    assert summary["final"]["train/loss"] < 0.01 and summary["final"]["val/acc"] == 1.0
    assert summary["steps"] == 40 * 4


def test_debug_limit_takes_fractions(compose, tmp_path):
    summary = run(compose, tmp_path, "debug=limit")
    assert summary["epochs"] == 2 and summary["steps"] == 2 * 3  # 10% of 32 batches


def test_early_stopping_ends_the_run(compose, tmp_path):
    summary = run(compose, tmp_path, "trainer.max_epochs=50", "trainer.early_stopping.patience=2",
                  "trainer.early_stopping.min_delta=1.0")  # no epoch improves by 1.0: stop after 1 + 2 epochs
    assert summary["stopped_early"] and summary["epochs"] == 3


@pytest.mark.parametrize("scheduler", ["cosine", "step", "onecycle", "plateau"])
def test_schedulers_change_the_learning_rate(compose, tmp_path, scheduler):
    extra = {"cosine": ["scheduler.warmup_epochs=1"], "step": ["scheduler.step_size=1", "scheduler.gamma=0.5"],
             "onecycle": [], "plateau": ["scheduler.patience=0", "scheduler.threshold=10"]}[scheduler]
    summary = run(compose, tmp_path, f"scheduler={scheduler}", "trainer.max_epochs=3", *extra)
    lrs = [summary["best"]["lr/main"], summary["final"]["lr/main"]]
    assert summary["final"]["lr/main"] != 0.001 or lrs[0] != lrs[1]


def test_warmup_ramps_up_per_step(compose):
    from trainkit.build import build_optimization, build_run

    cfg = compose("scheduler=cosine", "scheduler.warmup_epochs=1", "trainer.max_epochs=3")
    built = build_run(cfg)
    opt = build_optimization(cfg, built.task, built.settings, built.device, steps_per_epoch=32)
    lrs = []
    for _ in range(40):
        opt.optimizers["main"].step()
        opt._stepped = True
        opt.end_iteration()
        lrs.append(opt.learning_rates()["lr/main"])
    assert lrs[0] < lrs[15] < lrs[30] and max(lrs) == pytest.approx(0.001, rel=0.01)


def test_accumulation_and_ema_train(compose, tmp_path):
    summary = run(compose, tmp_path, "trainer.accumulate_grad_batches=4", "trainer.ema_decay=0.9",
                  "trainer.max_epochs=4")
    assert summary["steps"] == 4 * 32
    assert summary["final"]["val/loss"] < 0.5
