"""Readers load only the splits asked for (`load(splits=...)`), and the same metadata whatever was asked."""

from __future__ import annotations

import inspect
import re
from itertools import combinations
from pathlib import Path

import pytest
import torch
from factories import write_cifar10, write_mnist_csv

from trainkit.cli.compose import config_dir
from trainkit.data import cifar10, mnist_csv, synthetic
from trainkit.data.base import SPLITS, DataError, DataSplits
from trainkit.data.check import summarize

SUBSETS = [subset for k in (1, 2, 3) for subset in combinations(SPLITS, k)]


def same_split(a, b) -> bool:
    return torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def assert_subset_of(full: DataSplits, part: DataSplits, asked: tuple[str, ...]) -> None:
    """`part` holds exactly the asked splits of `full`, equal to them, and the same metadata."""
    for name in SPLITS:
        got, whole = getattr(part, name), getattr(full, name)
        if name in asked and whole is not None:
            assert got is not None and same_split(got, whole), name
        else:
            assert got is None, name
    assert part.meta == full.meta


@pytest.fixture
def mnist(tmp_path) -> dict[str, str]:
    write_mnist_csv(tmp_path / "train.csv", n=40)
    write_mnist_csv(tmp_path / "test.csv", n=12, seed=1)
    return {"train_csv": str(tmp_path / "train.csv"), "test_csv": str(tmp_path / "test.csv"), "cache": False}


@pytest.mark.parametrize("asked", SUBSETS, ids="+".join)
def test_mnist_any_subset_equals_the_full_load(mnist, asked):
    full = mnist_csv.load(**mnist, val_fraction=0.25, seed=2)
    assert_subset_of(full, mnist_csv.load(**mnist, val_fraction=0.25, seed=2, splits=asked), asked)


def test_mnist_test_alone_never_opens_the_train_csv(mnist):
    full = mnist_csv.load(**mnist)
    Path(mnist["train_csv"]).unlink()
    data = mnist_csv.load(**mnist, splits=("test",))
    assert data.train is None and data.val is None and same_split(data.test, full.test)
    assert data.meta == full.meta
    with pytest.raises(DataError, match=r"train\.csv does not exist.*data\.train_csv"):
        mnist_csv.load(**mnist, splits=("val",))  # val is carved from the train file: it is needed
    with pytest.raises(DataError, match=r"train\.csv does not exist"):
        mnist_csv.load(**mnist)  # and the default still needs it


def test_mnist_test_alone_without_a_test_csv_is_empty_but_has_meta(mnist):
    data = mnist_csv.load(mnist["train_csv"], splits=("test",))
    assert (data.train, data.val, data.test) == (None, None, None)
    assert data.meta == mnist_csv.load(mnist["train_csv"]).meta


def test_mnist_errors_of_the_asked_files_stay(tmp_path, mnist):
    write_mnist_csv(tmp_path / "unlabeled.csv", n=12, layout="kaggle_test")
    with pytest.raises(DataError, match="predicted but not scored"):
        mnist_csv.load(mnist["train_csv"], str(tmp_path / "unlabeled.csv"), splits=("test",))
    with pytest.raises(DataError, match="training needs labels"):  # train unlabeled: val alone still needs labels
        mnist_csv.load(str(tmp_path / "unlabeled.csv"), splits=("val",))
    data = mnist_csv.load(str(tmp_path / "unlabeled.csv"), mnist["test_csv"], splits=("test",))
    assert len(data.test) == 12  # the unusable train file is not read, so it does not stop evaluation


@pytest.fixture
def cifar(tmp_path) -> str:
    write_cifar10(tmp_path, n_per_batch=20, batches=("data_batch_1", "data_batch_2"))
    return str(tmp_path)


@pytest.mark.parametrize("test_fraction", [0.0, 0.25])
@pytest.mark.parametrize("asked", SUBSETS, ids="+".join)
def test_cifar_any_subset_equals_the_full_load(cifar, asked, test_fraction):
    full = cifar10.load(cifar, test_fraction=test_fraction, seed=3)
    assert_subset_of(full, cifar10.load(cifar, test_fraction=test_fraction, seed=3, splits=asked), asked)


def read_files(monkeypatch) -> list[str]:
    """The batch files cifar10 reads from now on, by name."""
    seen: list[str] = []
    read = cifar10._read_batch

    def recording(file):
        seen.append(file.name)
        return read(file)

    monkeypatch.setattr(cifar10, "_read_batch", recording)
    return seen


def test_cifar_test_alone_reads_only_test_batch(cifar, monkeypatch):
    seen = read_files(monkeypatch)
    data = cifar10.load(cifar, splits=("test",))
    assert seen == ["test_batch"]
    seen.clear()
    cifar10.load(cifar, splits=("train", "val"))
    assert seen == ["data_batch_1", "data_batch_2"]  # and training does not read the test batch
    seen.clear()
    full = cifar10.load(cifar)
    assert seen == []  # each batch was unpickled once, into the sample store; from then on the store is read
    assert same_split(data.test, full.test) and data.meta == full.meta
    assert list((Path(cifar) / cifar10.FOLDER / ".tkcache").glob("*.x.npy"))


def test_cifar_test_alone_survives_missing_train_batches(cifar):
    folder = Path(cifar) / cifar10.FOLDER
    full = cifar10.load(cifar)
    for name in ("data_batch_1", "data_batch_2"):
        (folder / name).unlink()
    data = cifar10.load(cifar, splits=("test",))
    assert same_split(data.test, full.test) and data.meta == full.meta
    with pytest.raises(DataError, match="no CIFAR-10 training batches"):
        cifar10.load(cifar)


def test_cifar_test_carved_from_train_reads_the_train_batches(cifar, monkeypatch):
    seen = read_files(monkeypatch)
    data = cifar10.load(cifar, test_fraction=0.25, splits=("test",))
    assert seen == ["data_batch_1", "data_batch_2"]
    assert same_split(data.test, cifar10.load(cifar, test_fraction=0.25).test)


def test_cifar_test_alone_in_a_missing_folder_says_where(tmp_path):
    with pytest.raises(DataError, match=r"no CIFAR-10 test batch at .*cifar-10-batches-py.*data\.download=true"):
        cifar10.load(str(tmp_path / "nowhere"), splits=("test",))
    write_cifar10(tmp_path, n_per_batch=10, with_test=False)
    with pytest.raises(DataError, match=r"test_batch is missing.*data\.test_fraction"):
        cifar10.load(str(tmp_path), splits=("test",))


@pytest.mark.parametrize("asked", SUBSETS, ids="+".join)
def test_synthetic_any_subset_equals_the_full_load(asked):
    full = synthetic.load(n_train=32, n_val=8, n_test=8, seed=4)
    assert_subset_of(full, synthetic.load(n_train=32, n_val=8, n_test=8, seed=4, splits=asked), asked)


@pytest.mark.parametrize("module", [mnist_csv, cifar10, synthetic], ids=lambda m: m.__name__)
def test_splits_is_keyword_only_and_no_config_key(module):
    param = inspect.signature(module.load).parameters["splits"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default == SPLITS
    for config in (config_dir() / "data").glob("*.yaml"):
        assert not re.search(r"^\s*splits\s*:", config.read_text(), re.MULTILINE), config


@pytest.mark.parametrize("splits", [("tests",), "test", ()])
def test_unknown_split_names_are_refused(splits):
    with pytest.raises(DataError, match=r"synthetic: splits=.* Ask for some of train, val, test"):
        synthetic.load(splits=splits)


def test_data_check_summary_of_fewer_splits(mnist):
    report = summarize(mnist_csv.load(**mnist, splits=("test",)))
    assert [s.name for s in report.splits] == ["test"] and report.fatal == []
    report = summarize(mnist_csv.load(**mnist, splits=("val", "test")))
    assert [s.name for s in report.splits] == ["val", "test"]
