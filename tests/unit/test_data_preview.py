"""The first training batch as a picture: BatchLoader.preview, reports.preview.input_grid, `data check preview=`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_cli
from factories import CIFAR_NAMES, cifar_images, mnist_images, write_mnist_csv
from PIL import Image
from rich.console import Console

from trainkit.commands import Context
from trainkit.commands.data import check
from trainkit.data import mnist_csv
from trainkit.data.base import DataMeta, Split
from trainkit.data.loader import Augment, BatchLoader
from trainkit.reports import preview
from trainkit.reports.preview import input_grid

MNIST_META = DataMeta("mnist_csv", "classification", (1, 28, 28), 10, class_names=[str(i) for i in range(10)],
                      scale=255.0, mean=(0.1307,), std=(0.3081,))
CIFAR_META = DataMeta("cifar10", "classification", (3, 32, 32), 10, class_names=CIFAR_NAMES, scale=255.0,
                      mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
# image_grid enlarges 28×28 by 96 // 28 = 3 to 84 pixels; a one-character caption is narrower, so a cell is
# 84 + 6 wide and 84 + 13 (one caption line) + 6 high; 8 × 8 cells and a 4-pixel margin.
MNIST_GRID_64 = (8 * 90 + 4, 8 * 103 + 4)


def cifar_split(n: int = 70) -> Split:
    data, labels = cifar_images(n, seed=2)
    return Split(torch.from_numpy(data.reshape(n, 3, 32, 32)), torch.from_numpy(labels))


def training_loader(augment: Augment | None, seed: int = 3) -> BatchLoader:
    return BatchLoader(cifar_split(), CIFAR_META, 16, torch.device("cpu"), shuffle=True, seed=seed, augment=augment)


@pytest.mark.parametrize("epoch", [1, 4])
def test_preview_is_the_first_batch_of_the_epoch_before_normalization(epoch):
    loader = training_loader(Augment(crop_padding=4, hflip=True))
    loader.set_epoch(7, start_batch=2)
    x, y = loader.preview(epoch)
    assert (loader.epoch, loader.start_batch) == (7, 2)  # the loader's position is untouched
    assert x.dtype == torch.uint8 and x.device.type == "cpu" and x.shape == (16, 3, 32, 32)
    loader.set_epoch(epoch)
    first_x, first_y = next(iter(loader))
    a, b = loader._affine
    assert torch.equal(x.to(torch.float32).mul_(a).add_(b), first_x) and torch.equal(y, first_y)


def test_preview_is_augmented_and_follows_the_epoch():
    augmented = training_loader(Augment(crop_padding=4, hflip=True)).preview(1)
    plain = training_loader(None).preview(1)
    assert torch.equal(augmented[1], plain[1])  # the same samples...
    assert not torch.equal(augmented[0], plain[0])  # ...cropped and flipped
    assert not torch.equal(training_loader(None).preview(2)[1], plain[1])  # another epoch, another order


def test_preview_of_an_evaluation_loader_is_its_first_batch():
    loader = BatchLoader(cifar_split(), CIFAR_META, 16, torch.device("cpu"))
    x, y = loader.preview()
    assert torch.equal(x, cifar_split().x[:16]) and torch.equal(y, cifar_split().y[:16])


def test_input_grid_of_64_mnist_images():
    x, y = mnist_images(100)
    image = input_grid(torch.from_numpy(x[:, None]), torch.from_numpy(y), MNIST_META)
    assert image.size == MNIST_GRID_64


def test_input_grid_captions_class_names_else_indices(monkeypatch):
    drawn = []
    monkeypatch.setattr(preview, "image_grid", lambda images, captions: drawn.append((images, captions)))
    split = cifar_split(12)
    input_grid(split.x, split.y, CIFAR_META, max_images=5)
    images, captions = drawn[-1]
    assert captions == [CIFAR_NAMES[c] for c in split.y[:5]]
    assert torch.equal(images, split.x[:5].float() / 255)  # pixels in [0, 1], unnormalized
    unnamed = DataMeta("x", "classification", (3, 32, 32), 10, scale=255.0)
    input_grid(split.x, split.y, unnamed, max_images=3)
    assert drawn[-1][1] == [str(int(c)) for c in split.y[:3]]


def test_input_grid_is_none_for_data_that_are_not_images():
    meta = DataMeta("synthetic_regression", "regression", (1,), 1, target_shape=(1,))
    assert input_grid(torch.rand(8, 1), torch.rand(8, 1), meta) is None


def test_cli_preview_writes_the_first_training_batch(tmp_path):
    train = tmp_path / "data" / "train.csv"
    write_mnist_csv(train, n=300)
    cwd = tmp_path / "work"
    cwd.mkdir()
    augment = ["+data.augment.crop_padding=3", "+data.augment.hflip=true"]
    proc = run_cli("data", "check", "data=mnist_csv", f"data.train_csv={train}", "preview=pics/first.png", *augment,
                   cwd=cwd)
    written = cwd / "pics" / "first.png"
    assert "preview: wrote the first training batch of epoch 1 (64 of its 128 images" in proc.stdout
    assert "pics/first.png" in proc.stdout and written.is_file()
    image = Image.open(written)
    assert image.format == "PNG" and image.size == MNIST_GRID_64
    # The very batch training's loader yields first (data.batch_size 128, seed 0, the augmentation asked for).
    data = mnist_csv.load(str(train))
    loader = BatchLoader(data.train, data.meta, 128, torch.device("cpu"), shuffle=True, seed=0,
                         augment=Augment(crop_padding=3, hflip=True))
    expected = input_grid(*loader.preview(1), data.meta)
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(expected))


def test_cli_without_preview_writes_nothing(tmp_path):
    train = tmp_path / "data" / "train.csv"
    write_mnist_csv(train, n=100)
    cwd = tmp_path / "work"
    cwd.mkdir()
    proc = run_cli("data", "check", "data=mnist_csv", f"data.train_csv={train}", cwd=cwd)
    assert "preview" not in proc.stdout and list(cwd.iterdir()) == []


def test_preview_of_data_that_are_not_images_says_so_in_one_line(compose, tmp_path):
    console = Console(record=True, width=240)
    result = check(compose(f"preview={tmp_path / 'x.png'}", config="data_check"), Context(tmp_path, console=console, errors=console))
    lines = [line for line in console.export_text().splitlines() if "preview" in line]
    assert lines == ["preview: nothing to preview, data=synthetic_regression is not images (one sample has shape 1, "
                     "not C×H×W); nothing written."]
    assert "preview" not in result and list(tmp_path.iterdir()) == []
