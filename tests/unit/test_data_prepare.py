"""`trainkit data prepare mnist-csv`: every CSV layout from the original IDX files, which it finds and checks."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from factories import write_mnist_idx

from trainkit.cli import main
from trainkit.commands.data import prepare
from trainkit.data import mnist_csv
from trainkit.data.prepare import find_idx

OUTPUTS = {"train.csv": ("train", True), "mnist_train.csv": ("train", True), "test.csv": ("t10k", True),
           "mnist_test.csv": ("t10k", True), "test_unlabeled.csv": ("t10k", False)}


@pytest.mark.parametrize("layout", ["flat gz", "flat raw", "torchvision"])
def test_every_layout_is_written_and_reads_back_exactly(tmp_path, capsys, layout):
    source = tmp_path / "src"
    idx = write_mnist_idx(source / "MNIST" / "raw" if layout == "torchvision" else source, n_train=30, n_test=12,
                          gz=layout != "flat raw")
    assert prepare(["mnist-csv", "--source", str(source), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / "out") in printed
    for name, (prefix, labeled) in OUTPUTS.items():
        path = tmp_path / "out" / name
        assert name in printed
        split = mnist_csv.read_split(str(path), cache=False)
        assert np.array_equal(split.x[:, 0].numpy(), idx[f"{prefix}-images-idx3-ubyte"])
        if labeled:
            assert np.array_equal(split.y.numpy(), idx[f"{prefix}-labels-idx1-ubyte"])
        else:
            assert split.y is None
    assert "60,000" not in printed and "30" in printed and "12" in printed
    header = (tmp_path / "out" / "train.csv").read_text().split("\n", 1)[0]
    assert header == "label," + ",".join(f"pixel{i}" for i in range(784))
    assert (tmp_path / "out" / "test_unlabeled.csv").read_text().startswith("pixel0,pixel1,")
    assert (tmp_path / "out" / "mnist_test.csv").read_text()[0].isdigit()


def test_download_goes_through_torchvision(tmp_path, monkeypatch, capsys):
    import torchvision.datasets

    calls = []

    class FakeMNIST:  # torchvision.datasets.MNIST(root, train, download): files land in root/MNIST/raw
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            write_mnist_idx(tmp_path / "dl" / "MNIST" / "raw", n_train=20, n_test=10)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    assert prepare(["mnist-csv", "--source", str(tmp_path / "dl"), "--out", str(tmp_path / "out"),
                    "--download"]) == 0
    assert calls and all(root == str(tmp_path / "dl") and download for root, _, download in calls)
    assert len(mnist_csv.read_split(str(tmp_path / "out" / "train.csv"))) == 20


def test_download_failure_says_what_to_do(tmp_path, monkeypatch, capsys):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    assert main(["data", "prepare", "mnist-csv", "--source", str(tmp_path), "--out", str(tmp_path / "out"),
                 "--download"]) == 1
    out = capsys.readouterr().err
    assert "could not download MNIST" in out and "without --download" in out and "Traceback" not in out


def _break(source, how):
    path = source / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    if how == "missing":
        (source / "t10k-labels-idx1-ubyte.gz").unlink()
    elif how == "truncated":
        path.write_bytes(gzip.compress(raw[:-100]))
    elif how == "not gzip":
        path.write_bytes(raw[:50])
    elif how == "not idx":
        path.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + raw[4:]))
    elif how == "counts":
        (source / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02"))


@pytest.mark.parametrize("how, message", [
    ("missing", "lacks t10k-labels-idx1-ubyte"),
    ("truncated", "train-images-idx3-ubyte.gz holds 23420 data bytes, but its header says 30×28×28 = 23520"),
    ("not gzip", "train-images-idx3-ubyte.gz could not be read"),
    ("not idx", "train-images-idx3-ubyte.gz is not an IDX file of 3-D unsigned bytes"),
    ("counts", "holds 30 images but"),
])
def test_bad_idx_files_are_named(tmp_path, capsys, how, message):
    write_mnist_idx(tmp_path / "src", n_train=30)
    _break(tmp_path / "src", how)
    assert main(["data", "prepare", "mnist-csv", "--source", str(tmp_path / "src"), "--out",
                 str(tmp_path / "out")]) == 1
    out = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "error:" in out and message in out, out


def test_source_that_is_not_a_folder(tmp_path, capsys):
    assert main(["data", "prepare", "mnist-csv", "--source", str(tmp_path / "none"), "--out",
                 str(tmp_path / "out")]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_renamed_idx_files_are_found(tmp_path):
    write_mnist_idx(tmp_path, gz=False)
    for path in tmp_path.glob("*-idx*-ubyte"):
        path.rename(path.with_name(path.name.replace("-idx", ".idx")))  # train-images.idx3-ubyte, as often shared
    assert set(find_idx(tmp_path)) == {"train_images", "train_labels", "test_images", "test_labels"}


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        prepare(["cifar"])
    assert exit_.value.code == 2
