"""The fast recipes (experiment=mnist_fast, cifar10_fast) and the options they are made of: label smoothing,
test-time flips, EMA evaluation, channels_last and the fast_resnet model. Each option changes what it says and
resumes exactly; each preset composes from the shipped configs and learns on tiny data."""

from __future__ import annotations

import io
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from conftest import fit, untimed

from trainkit.commands import Context
from trainkit.commands.train import train
from trainkit.data.base import DataMeta
from trainkit.engine import checkpoint
from trainkit.engine.loop import evaluate
from trainkit.errors import ConfigError
from trainkit.models.fast_resnet import FastResNet
from trainkit.tasks.classification import ClassificationTask

QUIET = ["trainer.progress=none", "trainer.tensorboard=false", "trainer.num_threads=1", "trainer.device=cpu"]
IMAGES = DataMeta("tiny", "classification", (3, 8, 8), 4)


@pytest.fixture(autouse=True)
def _threads():
    """trainer.num_threads=1 sets torch's thread count for the whole process: put it back after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class Recorder:
    """The two things a task's train_step asks of an Optimization: an autocast context and `step(name, loss)`."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.autocast = nullcontext

    def step(self, name: str, loss: torch.Tensor) -> None:
        self.losses.append(loss.detach())


def tiny_task(**options) -> ClassificationTask:
    torch.manual_seed(0)
    return ClassificationTask(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 4)), IMAGES,
                              **options)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)


def test_label_smoothing_trains_on_softened_targets_and_evaluates_plain():
    x, y = batch()
    task, opt = tiny_task(label_smoothing=0.2), Recorder()
    logits = task.net(x)
    out = task.train_step((x, y), opt)
    assert torch.equal(out["loss"], F.cross_entropy(logits, y, label_smoothing=0.2).detach())
    assert not torch.allclose(out["loss"], F.cross_entropy(logits, y)), "smoothing changes the training loss"
    with torch.no_grad():
        assert torch.equal(task.eval_step((x, y))["loss"], F.cross_entropy(task.net(x), y)), "val/loss stays plain"


def test_tta_flip_averages_each_image_with_its_mirror_everywhere_the_net_is_used():
    x, y = batch()
    plain, flipped = tiny_task(), tiny_task(tta_flip=True)
    with torch.no_grad():
        expected = (plain.net(x) + plain.net(x.flip(3))) / 2
        assert not torch.allclose(expected, plain.net(x)), "the test images are not mirror-symmetric"
        torch.testing.assert_close(flipped.outputs(x), expected)
        torch.testing.assert_close(flipped.eval_step((x, y))["loss"], F.cross_entropy(expected, y))
        assert torch.equal(plain.outputs(x), plain.net(x))
        raw = torch.randint(0, 256, (5, 3, 8, 8)).float()
        torch.testing.assert_close(flipped.deployable()(raw), (plain.deployable()(raw) +
                                                                plain.deployable()(raw.flip(3))) / 2)
    assert flipped.modules().keys() == {"net"}, "checkpoints hold the same weights with and without flips"


def test_task_options_refuse_values_that_cannot_work():
    with pytest.raises(ConfigError, match="task.label_smoothing=1.0"):
        tiny_task(label_smoothing=1.0)
    table = DataMeta("table", "classification", (5,), 3)
    with pytest.raises(ConfigError, match="task.tta_flip=true"):
        ClassificationTask(nn.Linear(5, 3), table, tta_flip=True)


def test_fast_resnet_is_sized_from_the_data_and_its_width_is_a_key():
    for shape in ((1, 28, 28), (3, 32, 32)):
        out = FastResNet(shape, 10, width=4)(torch.randn(2, *shape))
        assert out.shape == (2, 10)
    narrow, wide = (sum(p.numel() for p in FastResNet((3, 32, 32), 10, width=w).parameters()) for w in (4, 8))
    assert 3 * narrow < wide, "the convs' weights grow with the square of the width"
    with pytest.raises(ValueError, match="model.stages"):
        FastResNet((3, 8, 8), 10, stages=[1, 1, 1, 1])


# ----------------------------------------------------------------------------------------- through the Trainer
def cifar_run(cifar_root: Path, *overrides: str) -> list[str]:
    return ["data=cifar10", f"data.root={cifar_root}", "data.batch_size=32", "model=fast_resnet", "model.width=4",
            "optimizer=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9", *QUIET, *overrides]


OPTIONS = {
    "label_smoothing": ["task=classification", "task.label_smoothing=0.2"],
    "tta_flip": ["task=classification", "task.tta_flip=true"],
    "ema": ["trainer.ema_decay=0.9"],
    "channels_last": ["trainer.channels_last=true"],
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_option_resumes_exactly(compose, tmp_path, cifar_root, option):
    """Two epochs straight against one epoch and a resume: the same metrics rows and bitwise the same weights."""
    cfg = compose(*cifar_run(cifar_root, *OPTIONS[option], "trainer.max_epochs=2"))
    rows = fit(cfg, tmp_path / "straight").state.history
    fit(cfg, tmp_path / "halves", epochs=1)
    resumed = fit(cfg, tmp_path / "halves", resume=tmp_path / "halves" / "checkpoints" / "last.ckpt")
    assert [untimed(r) for r in resumed.state.history] == [untimed(r) for r in rows]
    a, b = (checkpoint.load(tmp_path / d / "checkpoints" / "last.ckpt") for d in ("straight", "halves"))
    for key in ("modules", "training_modules"):
        if key in a:
            assert all(torch.equal(a[key]["net"][k], b[key]["net"][k]) for k in a[key]["net"]), f"{key} differ"


def test_option_keys_reach_the_run(compose, tmp_path, cifar_root):
    cfg = compose(*cifar_run(cifar_root, *OPTIONS["label_smoothing"], *OPTIONS["tta_flip"],
                             *OPTIONS["channels_last"], "trainer.max_epochs=1", "trainer.limit_train_batches=2"))
    trainer = fit(cfg, tmp_path / "run")
    task = trainer.task
    assert task.label_smoothing == 0.2 and task.tta_flip
    conv = next(m for m in task.net.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_tta_flip_leaves_each_epochs_validation_to_the_network_alone(compose, tmp_path, cifar_root):
    """val/ each epoch is one forward pass per image; the test pass (and eval) average each image with its mirror."""
    cfg = compose(*cifar_run(cifar_root, *OPTIONS["tta_flip"], "trainer.max_epochs=1"))
    trainer = fit(cfg, tmp_path / "run")
    logged = trainer.state.history[-1]
    plain = evaluate(trainer.task, trainer.data.val, each_epoch=True)
    flipped = evaluate(trainer.task, trainer.data.val)
    assert logged["val/loss"] == pytest.approx(plain["val/loss"], rel=1e-6)
    assert abs(plain["val/loss"] - flipped["val/loss"]) > 1e-4, "the flips change the loss"
    assert trainer.test()["test/loss"] == pytest.approx(evaluate(trainer.task, trainer.data.test, prefix="test/")[
        "test/loss"], rel=1e-6)


def test_ema_validates_and_saves_the_averaged_weights(compose, tmp_path, cifar_root):
    cfg = compose(*cifar_run(cifar_root, *OPTIONS["ema"], "trainer.max_epochs=1"))
    trainer = fit(cfg, tmp_path / "run")
    task, opt = trainer.task, trainer.opt
    logged = trainer.state.history[-1]["val/loss"]
    raw = evaluate(task, trainer.data.val)["val/loss"]
    with opt.ema.swapped():
        averaged = evaluate(task, trainer.data.val)["val/loss"]
    assert logged == pytest.approx(averaged, rel=1e-6) and abs(raw - averaged) > 1e-4
    saved = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.ckpt")["modules"]["net"]
    average = opt.ema.averages["net"].module.state_dict()
    assert all(torch.equal(saved[k], average[k]) for k in saved), "eval and export read the averaged weights"


# ------------------------------------------------------------------------------------------------- presets
def run_preset(compose, tmp_path: Path, *overrides: str) -> dict:
    cfg = compose(*overrides, *QUIET)
    return train(cfg, Context(tmp_path / "run", console=Console(file=io.StringIO())))


def test_mnist_fast_learns(compose, tmp_path, mnist_files):
    summary = run_preset(compose, tmp_path, "experiment=mnist_fast", f"data.train_csv={mnist_files['kaggle_train']}",
                         f"data.test_csv={mnist_files['kaggle_test']}", "data.batch_size=16", "trainer.max_epochs=2")
    assert summary["test"]["test/acc"] > 0.5, "far above the 10% of chance"


def test_cifar10_fast_learns(compose, tmp_path, cifar_root):
    summary = run_preset(compose, tmp_path, "experiment=cifar10_fast", f"data.root={cifar_root}",
                         "model.width=8", "data.batch_size=16", "trainer.max_epochs=3")
    assert summary["test"]["test/acc"] > 0.5, "far above the 10% of chance"
