"""data=torchvision: each set read through torchvision's own classes from tiny files in its exact on-disk format
(IDX files, CIFAR python pickles, SVHN MATLAB files), the clear errors when files are missing or the download
fails, and one run through the CLI's own path."""

from __future__ import annotations

import pickle
from functools import partial
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from factories import (assert_any_subset_of_splits_equals_the_full_load, mnist_images, write_cifar10, write_cifar100,
                       write_idx, write_mnist_idx, write_svhn)

from trainkit.data import torchvision_sets
from trainkit.data.base import DataError, Split, carve

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def carved(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    keep, held = carve(Split(torch.arange(n)[:, None], None), fraction, seed)
    return keep.x[:, 0], held.x[:, 0]


def assert_read(data, train_x, train_y, test_x, test_y, fraction=0.1, seed=0) -> None:
    """train/val are the carve of torchvision's train split, test its test split, pixel for pixel; the
    normalization is the whole train split's own."""
    keep, held = carved(len(train_x), fraction, seed)
    assert data.train.x.dtype == torch.uint8 and data.train.y.dtype == torch.int64
    assert np.array_equal(data.train.x.numpy(), train_x[keep]) and np.array_equal(data.train.y, train_y[keep])
    assert np.array_equal(data.val.x.numpy(), train_x[held]) and np.array_equal(data.val.y, train_y[held])
    assert np.array_equal(data.test.x.numpy(), test_x) and np.array_equal(data.test.y, test_y)
    channels = train_x.shape[1]
    pixels = train_x.transpose(1, 0, 2, 3).reshape(channels, -1) / 255
    assert data.meta.mean == pytest.approx(pixels.mean(1)) and data.meta.std == pytest.approx(pixels.std(1))
    assert data.meta.in_shape == train_x.shape[1:] and data.meta.scale == 255.0 and data.meta.kind == "classification"


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST", "KMNIST"])
def test_mnist_family_from_raw_idx_files(tmp_path, name):
    from torchvision import datasets

    arrays = write_mnist_idx(tmp_path / name / "raw", n_train=30, n_test=10, gz=False)
    data = torchvision_sets.load(name.lower(), str(tmp_path))  # any spelling of the name: fashionmnist works
    assert_read(data, arrays["train-images-idx3-ubyte"][:, None], arrays["train-labels-idx1-ubyte"],
                arrays["t10k-images-idx3-ubyte"][:, None], arrays["t10k-labels-idx1-ubyte"])
    assert data.meta.class_names == getattr(datasets, name).classes and data.meta.num_outputs == 10
    assert data.meta.name == f"torchvision:{name}"


def test_emnist_needs_a_split_and_is_read_upright(tmp_path):
    raw = tmp_path / "EMNIST" / "raw"
    for k, part in enumerate(("train", "test")):
        x, y = mnist_images(20, seed=k)
        write_idx(raw / f"emnist-balanced-{part}-images-idx3-ubyte", np.ascontiguousarray(x.transpose(0, 2, 1)))
        write_idx(raw / f"emnist-balanced-{part}-labels-idx1-ubyte", (y * 4).astype(np.uint8))  # up to 36 of 47
    with pytest.raises(DataError, match=r"EMNIST's data\.split is required: set data\.split to one of byclass, .*"
                                        r"e\.g\. data\.split=balanced"):
        torchvision_sets.load("EMNIST", str(tmp_path))
    data = torchvision_sets.load("EMNIST", str(tmp_path), split="balanced", splits=("test",))
    x, y = mnist_images(20, seed=1)
    assert np.array_equal(data.test.x[:, 0].numpy(), x)  # NIST's transposed pictures, turned upright
    assert data.test.y.tolist() == (y * 4).tolist() and data.meta.num_outputs == 47
    assert data.meta.class_names[:11] == [*"0123456789", "A"]


def test_qmnist_labels_are_the_first_column_of_its_records(tmp_path):
    raw = tmp_path / "QMNIST" / "raw"
    for k, part in enumerate(("train", "test")):
        x, y = mnist_images(12, seed=k)
        records = np.zeros((12, 8), np.int32)
        records[:, 0], records[:, 1] = y, 1000 + np.arange(12)  # class, then the NIST writer id and more
        write_idx(raw / f"qmnist-{part}-images-idx3-ubyte", x)
        write_idx(raw / f"qmnist-{part}-labels-idx2-int", records)
    data = torchvision_sets.load("QMNIST", str(tmp_path), val_fraction=0.25)
    (x, y), (tx, ty) = mnist_images(12, seed=0), mnist_images(12, seed=1)
    assert_read(data, x[:, None], y, tx[:, None], ty, fraction=0.25)


def test_cifar10_and_cifar100_from_their_pickles(tmp_path):
    folder = write_cifar10(tmp_path, n_per_batch=8, batches=TRAIN_BATCHES)
    data = torchvision_sets.load("CIFAR10", str(tmp_path))
    batches = [pickle.loads((folder / name).read_bytes(), encoding="bytes") for name in (*TRAIN_BATCHES, "test_batch")]
    xs = [b[b"data"].reshape(-1, 3, 32, 32) for b in batches]
    ys = [np.array(b[b"labels"]) for b in batches]
    assert_read(data, np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5])
    assert data.meta.class_names[:2] == ["airplane", "automobile"]

    write_cifar100(tmp_path, n_train=30, n_test=10)
    data = torchvision_sets.load("CIFAR100", str(tmp_path))
    train, test = (pickle.loads((tmp_path / "cifar-100-python" / n).read_bytes(), encoding="bytes")
                   for n in ("train", "test"))
    assert_read(data, train[b"data"].reshape(-1, 3, 32, 32), np.array(train[b"fine_labels"]),
                test[b"data"].reshape(-1, 3, 32, 32), np.array(test[b"fine_labels"]))
    assert data.meta.num_outputs == 100 and data.meta.class_names[:2] == ["fine0", "fine1"]


def test_a_cifar_pickle_that_would_run_code_is_refused_before_torchvision_opens_it(tmp_path):
    folder = write_cifar10(tmp_path, n_per_batch=4, batches=TRAIN_BATCHES)
    marker = tmp_path / "ran"
    (folder / "data_batch_3").write_bytes(b"cos\nsystem\n(V touch " + str(marker).encode() + b"\ntR.")
    with pytest.raises(DataError, match=r"refused .*data_batch_3 before torchvision read it: .*os\.system"):
        torchvision_sets.load("CIFAR10", str(tmp_path))
    assert not marker.exists()


def test_svhn_from_its_matlab_files(tmp_path):
    pytest.importorskip("scipy")  # torchvision reads SVHN with scipy.io
    written = write_svhn(tmp_path, n_train=20, n_test=10)
    data = torchvision_sets.load("SVHN", str(tmp_path))
    assert_read(data, *written["train"], *written["test"])  # label 10 in the file is digit 0
    assert data.meta.class_names == [str(d) for d in range(10)]


@pytest.mark.parametrize("name, files", [
    ("MNIST", r"MNIST/raw/ \(train-images-idx3-ubyte"),
    ("CIFAR100", r"cifar-100-python/ \(train, test, meta\)"),
    ("SVHN", r"train_32x32\.mat and test_32x32\.mat"),
])
def test_missing_files_name_the_root_and_the_download_switch(tmp_path, name, files):
    with pytest.raises(DataError, match=rf"no {name} files under data\.root={tmp_path}: torchvision looks for "
                                        rf"{files}.*Set data\.download=true"):
        torchvision_sets.load(name, str(tmp_path))


def test_an_offline_download_says_so(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=rf"could not download KMNIST into data\.root={tmp_path} \(.*name resolution"
                                        rf".*Without internet, put the files there yourself .*data\.download=false"):
        torchvision_sets.load("KMNIST", str(tmp_path), download=True)


def test_names_and_splits_that_do_not_exist(tmp_path):
    with pytest.raises(DataError, match=r"data\.dataset='ImageNet' is not one of .*MNIST, FashionMNIST, .*SVHN"):
        torchvision_sets.load("ImageNet", str(tmp_path))
    with pytest.raises(DataError, match=r"data\.split='letters' means nothing for CIFAR10.*data\.split=null"):
        torchvision_sets.load("CIFAR10", str(tmp_path), split="letters")


def test_only_the_test_split_has_the_same_metadata(tmp_path):
    write_mnist_idx(tmp_path / "MNIST" / "raw", gz=False)
    full = torchvision_sets.load("MNIST", str(tmp_path))
    test = torchvision_sets.load("MNIST", str(tmp_path), splits=("test",))
    assert test.meta == full.meta and test.train is None and test.val is None
    assert torchvision_sets.load("MNIST", str(tmp_path), normalize=False).meta.mean is None


def test_train_and_check_through_the_cli(tmp_path, monkeypatch, capsys):
    """`trainkit train data=torchvision data.dataset=FashionMNIST ...` and `trainkit data check` as the CLI runs
    them, in this process (trainkit.api.run): the config keys reach the reader, the run trains."""
    from trainkit.api import run

    write_mnist_idx(tmp_path / "data" / "FashionMNIST" / "raw", n_train=200, n_test=50, gz=False)
    monkeypatch.chdir(tmp_path)
    data = ["data=torchvision", "data.dataset=FashionMNIST", "data.root=data"]
    result = run("data check", data)
    assert "Trouser" in capsys.readouterr().out and result["in_shape"] == [1, 28, 28]
    summary = run("train", [*data, "model=mlp", "trainer.max_epochs=2", "trainer.progress=plain"])
    assert summary["test"]["test/acc"] > 0.5, summary  # ten classes: chance is 0.1


def test_a_copy_without_test_batch_holds_back_a_test_split(tmp_path):
    """CIFAR-10 re-packed without test_batch (as ../shared/data has it): data.test_fraction carves test from train."""
    write_cifar10(tmp_path, n_per_batch=10, batches=TRAIN_BATCHES, with_test=False)
    with pytest.raises(DataError, match=r"no CIFAR10 files under data\.root=.*cifar-10-batches-py/"):
        torchvision_sets.load("CIFAR10", str(tmp_path))  # test_batch is missing: the test split cannot be read
    data = torchvision_sets.load("CIFAR10", str(tmp_path), test_fraction=0.2, seed=3)
    rest, test = carved(50, 0.2, 3)
    full = torchvision_sets.load("CIFAR10", str(tmp_path), test_fraction=0.2, seed=3, splits=("test",))
    assert len(data.test) == len(test) == 10 and torch.equal(full.test.x, data.test.x)
    assert len(data.train) + len(data.val) == len(rest) and full.meta == data.meta


@pytest.mark.parametrize("test_fraction", [0.0, 0.25])
def test_any_subset_of_splits_equals_the_full_load(tmp_path, test_fraction):
    write_mnist_idx(tmp_path / "MNIST" / "raw", n_train=30, n_test=10, gz=False)
    assert_any_subset_of_splits_equals_the_full_load(
        partial(torchvision_sets.load, "MNIST", str(tmp_path), test_fraction=test_fraction, seed=5))
