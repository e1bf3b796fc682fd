"""The class-conditional GAN (`model.conditional=true`): it learns each class's images from the labels, draws every
class equally often, keeps one input vector (noise, then a one-hot class code) from training to export, refuses
data without classes, and resumes exactly."""

from __future__ import annotations

import pytest
import torch

from conftest import fit, untimed

from trainkit.engine import checkpoint
from trainkit.errors import ConfigError
from trainkit.models.gan import GAN

QUIET = ["trainer.progress=none", "trainer.tensorboard=false", "trainer.num_threads=1", "trainer.device=cpu"]


@pytest.fixture(autouse=True)
def _threads():
    """trainer.num_threads=1 sets torch's thread count for the whole process: put it back after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def gan_run(mnist_files, *overrides: str) -> list[str]:
    return ["data=mnist_csv", f"data.train_csv={mnist_files['kaggle_train']}", f"data.test_csv={mnist_files['kaggle_test']}",
            "model=gan", "model.arch=mlp", "model.g_hidden=[128]", "model.d_hidden=[128]", "model.dropout=0.0",
            "model.latent_dim=16", "model.conditional=true", "optimizer=adam", "optimizer.lr=0.002",
            "optimizer.betas=[0.5,0.999]", "data.batch_size=40", *QUIET, *overrides]


def block_class(images) -> torch.Tensor:
    """Which class's block position (tests/factories.mnist_images: two rows of five 9×5 blocks) is brightest."""
    means = [images[:, 0, 3 + 13 * (c // 5):12 + 13 * (c // 5), 1 + 5 * (c % 5):6 + 5 * (c % 5)].mean((1, 2))
             for c in range(10)]
    return torch.stack(means, 1).argmax(1)


def test_each_class_code_draws_that_class(compose, tmp_path, mnist_files):
    """Tiny MNIST whose class is where a bright block sits: the generator puts the block where its code says."""
    trainer = fit(compose(*gan_run(mnist_files, "trainer.max_epochs=30")), tmp_path / "run")
    task = trainer.task
    images = task.generate(200, seed=3)
    asked = torch.arange(200) % 10  # every class in turn
    hits = (block_class(images) == asked).float().mean()
    assert hits > 0.5, "the class code chooses the block's place (chance: 10%)"
    assert torch.equal(torch.bincount(asked, minlength=10), torch.full((10,), 20)), "each class equally often"
    z = task.example_input(4)
    assert z.shape == (4, 16 + 10) and torch.equal(z[:, 16:].argmax(1), torch.arange(4)), "noise, then one-hot"
    assert task.describe()["input"]["shape"] == ["batch", 26]


def test_the_discriminator_judges_the_pair():
    torch.manual_seed(0)
    gan = GAN((1, 8, 8), "conv", latent_dim=4, g_channels=[8], d_channels=[8], dropout=0.0, num_classes=3)
    with torch.no_grad():
        gan.discriminator.embed.weight.normal_()
    x = torch.randn(5, 1, 8, 8)
    zeros, twos = torch.zeros(5, dtype=torch.long), torch.full((5,), 2)
    assert not torch.allclose(gan.discriminator(x, zeros), gan.discriminator(x, twos)), "the class changes the score"
    assert gan(torch.randn(5, 4 + 3)).shape == (5, 1, 8, 8)
    plain = GAN((1, 8, 8), "conv", latent_dim=4, g_channels=[8], d_channels=[8], dropout=0.0)
    assert plain.discriminator.embed is None and plain(torch.randn(5, 4)).shape == (5, 1, 8, 8)


def test_data_without_classes_is_refused(compose, tmp_path):
    cfg = compose("model=gan", "model.conditional=true", "data.n_train=64", *QUIET)
    with pytest.raises(ConfigError, match="model.conditional=true .* data=synthetic_regression has no classes"):
        fit(cfg, tmp_path / "run")


def test_resumes_exactly(compose, tmp_path, mnist_files):
    """Two epochs straight against one epoch and a resume: the same metrics rows and bitwise the same weights."""
    cfg = compose(*gan_run(mnist_files, "trainer.max_epochs=2", "trainer.ema_decay=0.9"))
    rows = fit(cfg, tmp_path / "straight").state.history
    fit(cfg, tmp_path / "halves", epochs=1)
    resumed = fit(cfg, tmp_path / "halves", resume=tmp_path / "halves" / "checkpoints" / "last.ckpt")
    assert [untimed(r) for r in resumed.state.history] == [untimed(r) for r in rows]
    a, b = (checkpoint.load(tmp_path / d / "checkpoints" / "last.ckpt") for d in ("straight", "halves"))
    assert a["modules"]["gan"].keys() == b["modules"]["gan"].keys()
    assert any(k.startswith("discriminator.embed") for k in a["modules"]["gan"])
    for key in ("modules", "training_modules"):
        if key in a:
            assert all(torch.equal(a[key]["gan"][k], b[key]["gan"][k]) for k in a[key]["gan"]), f"{key} differ"
