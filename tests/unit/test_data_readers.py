"""Unit tests for the MNIST CSV, CIFAR-10 and synthetic readers, on tiny files in the real formats."""

from __future__ import annotations

import os
import pickle
import pickletools
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import (
    MNIST_HEADER, cifar_images, mnist_images, py2_pickle, write_cifar10, write_cifar_batch, write_mnist_csv,
)

from trainkit.data import cifar10, mnist_csv, synthetic
from trainkit.data.base import DataError, Split, carve

READERS = [mnist_csv, cifar10, synthetic]


def held_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which rows carve keeps and holds back, found by carving the row numbers themselves."""
    keep, held = carve(Split(torch.arange(n)[:, None], None), fraction, seed)
    return keep.x[:, 0], held.x[:, 0]


def edit_line(path: Path, number: int, change) -> None:
    """Replace line `number` (1-based) of a text file by change(cells) joined with commas."""
    lines = path.read_text().split("\n")
    lines[number - 1] = ",".join(change(lines[number - 1].split(",")))
    path.write_text("\n".join(lines))


# --- MNIST CSV: the two layouts ------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["kaggle", "headerless"])
@pytest.mark.parametrize("asked", ["auto", "same"])
def test_mnist_layouts_load_every_row_exactly(tmp_path, layout, asked):
    x, y = write_mnist_csv(tmp_path / "train.csv", n=40, layout=layout)
    data = mnist_csv.load(str(tmp_path / "train.csv"), val_fraction=0.25, seed=3,
                          layout=layout if asked == "same" else "auto")
    keep, held = held_indices(40, 0.25, 3)
    assert data.train.x.dtype == torch.uint8 and data.train.x.shape == (30, 1, 28, 28)
    assert data.train.y.dtype == torch.int64 and data.val.x.shape == (10, 1, 28, 28)
    assert np.array_equal(data.train.x[:, 0].numpy(), x[keep]) and np.array_equal(data.train.y, y[keep])
    assert np.array_equal(data.val.x[:, 0].numpy(), x[held]) and np.array_equal(data.val.y, y[held])
    assert data.test is None


def test_mnist_meta(tmp_path):
    write_mnist_csv(tmp_path / "train.csv", n=20)
    meta = mnist_csv.load(str(tmp_path / "train.csv")).meta
    assert (meta.name, meta.kind, meta.in_shape, meta.num_outputs) == ("mnist_csv", "classification",
                                                                       (1, 28, 28), 10)
    assert meta.class_names == [str(i) for i in range(10)] and meta.scale == 255.0
    assert (meta.mean, meta.std, meta.target_shape) == ((0.1307,), (0.3081,), ())


def test_mnist_unlabeled_kaggle_test_file_reads_for_prediction_but_not_for_training(tmp_path):
    write_mnist_csv(tmp_path / "train.csv", n=20)
    x, _ = write_mnist_csv(tmp_path / "test.csv", n=7, layout="kaggle_test", seed=1)
    split = mnist_csv.read_split(str(tmp_path / "test.csv"))
    assert split.y is None and np.array_equal(split.x[:, 0].numpy(), x)
    with pytest.raises(DataError, match=r"test\.csv has no label column .* predicted but not scored.*"
                                        r"data\.test_csv=null"):
        mnist_csv.load(str(tmp_path / "train.csv"), str(tmp_path / "test.csv"))


def test_mnist_labeled_test_file(tmp_path):
    write_mnist_csv(tmp_path / "train.csv", n=20, layout="headerless")
    x, y = write_mnist_csv(tmp_path / "test.csv", n=9, layout="headerless", seed=2)
    data = mnist_csv.load(str(tmp_path / "train.csv"), str(tmp_path / "test.csv"))
    assert np.array_equal(data.test.x[:, 0].numpy(), x) and np.array_equal(data.test.y, y)


def test_mnist_crlf_cr_and_blank_lines_are_fine(tmp_path):
    path = tmp_path / "train.csv"
    x, y = write_mnist_csv(path, n=20)
    path.write_text(path.read_text().replace("\n", "\r\n", 5).replace("\n", "\r", 3) + "\n\n")
    split = mnist_csv.read_split(str(path), key="data.train_csv")
    assert np.array_equal(split.x[:, 0].numpy(), x) and np.array_equal(split.y, y)


def test_mnist_val_carve_sizes_and_determinism(tmp_path):
    write_mnist_csv(tmp_path / "train.csv", n=50)

    def load(seed):
        return mnist_csv.load(str(tmp_path / "train.csv"), val_fraction=0.2, seed=seed)

    a, b, c = load(0), load(0), load(1)
    assert (len(a.train), len(a.val)) == (40, 10)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.val.x, c.val.x)


# --- MNIST CSV: every bad input names file, line, column and the fix ----------------------------


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_mnist_val_fraction_must_be_inside_0_1(tmp_path, fraction):
    write_mnist_csv(tmp_path / "train.csv", n=20)
    with pytest.raises(DataError, match="data.val_fraction"):
        mnist_csv.load(str(tmp_path / "train.csv"), val_fraction=fraction)


def test_mnist_too_few_rows_to_carve_names_key_and_file(tmp_path):
    write_mnist_csv(tmp_path / "train.csv", n=2)
    with pytest.raises(DataError, match=r"train\.csv.*data\.val_fraction"):
        mnist_csv.load(str(tmp_path / "train.csv"), val_fraction=0.1)


def test_mnist_unknown_layout_lists_choices(tmp_path):
    write_mnist_csv(tmp_path / "train.csv", n=20)
    with pytest.raises(DataError, match="data.layout") as err:
        mnist_csv.load(str(tmp_path / "train.csv"), layout="csv")
    assert all(choice in str(err.value) for choice in ("auto", "kaggle", "headerless"))


def test_mnist_unlabeled_train_file_is_refused(tmp_path):
    write_mnist_csv(tmp_path / "test.csv", n=20, layout="kaggle_test")
    with pytest.raises(DataError, match=r"test\.csv.*no label.*data\.train_csv"):
        mnist_csv.load(str(tmp_path / "test.csv"))


def test_mnist_missing_files_name_the_key(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv does not exist.*data\.train_csv"):
        mnist_csv.load(str(tmp_path / "nope.csv"))
    write_mnist_csv(tmp_path / "train.csv", n=20)
    with pytest.raises(DataError, match=r"gone\.csv does not exist.*data\.test_csv"):
        mnist_csv.load(str(tmp_path / "train.csv"), str(tmp_path / "gone.csv"))


def test_mnist_relative_missing_path_shows_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=re.escape(f"resolved to {tmp_path / 'data' / 'x.csv'}")):
        mnist_csv.load("data/x.csv")


def test_mnist_directory_instead_of_file(tmp_path):
    write_mnist_csv(tmp_path / "train.csv", n=12)
    with pytest.raises(DataError, match=r"is a directory.*train\.csv.*data\.train_csv") as err:
        mnist_csv.load(str(tmp_path))
    assert f"data.train_csv={tmp_path / 'train.csv'}" in str(err.value)


@pytest.mark.parametrize("text, found", [("", "is empty"), ("\n1,2\n", "empty line 1"),
                                         (MNIST_HEADER + "\n", "header \\(line 1\\) but no data rows")])
def test_mnist_empty_and_header_only_files(tmp_path, text, found):
    (tmp_path / "train.csv").write_text(text)
    with pytest.raises(DataError, match=found) as err:
        mnist_csv.load(str(tmp_path / "train.csv"))
    assert str(tmp_path / "train.csv") in str(err.value) and "data.train_csv" in str(err.value)


def test_mnist_gzip_and_binary_files_are_named(tmp_path):
    (tmp_path / "train.csv.gz").write_bytes(b"\x1f\x8b\x08\x00junk")
    with pytest.raises(DataError, match="gzip-compressed"):
        mnist_csv.load(str(tmp_path / "train.csv.gz"))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + bytes(100))
    with pytest.raises(DataError, match=r"idx3-ubyte is not a text CSV file.*data\.train_csv"):
        mnist_csv.load(str(tmp_path / "train-images-idx3-ubyte"))


def _drop_last(cells):
    return cells[:-1]


def _add_one(cells):
    return cells + ["0"]


def _set(column, value):
    def change(cells):
        cells[column - 1] = value
        return cells
    return change


# (layout, line to break, change, expected message fragment); Kaggle line numbers count the header
BAD_ROWS = [
    ("kaggle", 9, _drop_last, "line 9 has 783 pixel values after the label, expected 784"),
    ("kaggle", 2, _add_one, "line 2 has 785 pixel values after the label, expected 784"),
    ("headerless", 20, _drop_last, "line 20 has 783 pixel values after the label, expected 784"),
    ("kaggle_test", 4, _drop_last, "line 4 has 783 pixel values, expected 784"),
    ("kaggle", 5, _set(7, "abc"), "line 5 column 7 (pixel5) is 'abc', expected a pixel value 0..255"),
    ("kaggle", 5, _set(100, ""), "line 5 column 100 (pixel98) is empty"),
    ("kaggle", 6, _set(785, "256"), "line 6 column 785 (pixel783) is '256', expected a pixel value 0..255"),
    ("headerless", 3, _set(2, "-1"), "line 3 column 2 (pixel0) is '-1'"),
    ("kaggle", 7, _set(1, "10"), "line 7 column 1 (label) is '10', expected a class label 0..9"),
    ("headerless", 11, _set(1, "3.5"), "line 11 column 1 (label) is '3.5', expected a class label"),
    ("kaggle", 3, _set(1, "x"), "line 3 column 1 (label) is 'x'"),
    ("kaggle_test", 8, _set(1, "1.0"), "line 8 column 1 (pixel0) is '1.0'"),
    ("kaggle", 30, _set(3, "+-5"), "line 30 column 3 (pixel1) is '+-5'"),
    ("headerless", 30, _set(3, "1_0"), "line 30 column 3 (pixel1) is '1_0'"),
]


@pytest.mark.parametrize("layout, line, change, message", BAD_ROWS)
def test_mnist_bad_row_is_named(tmp_path, layout, line, change, message):
    path = tmp_path / "data.csv"
    write_mnist_csv(path, n=30, layout=layout)
    write_mnist_csv(tmp_path / "train.csv", n=30)
    edit_line(path, line, change)
    with pytest.raises(DataError) as err:
        if layout == "kaggle_test":
            mnist_csv.load(str(tmp_path / "train.csv"), str(path))
        else:
            mnist_csv.load(str(path))
    assert str(path) in str(err.value) and message in str(err.value), str(err.value)
    assert "Fix or remove that row" in str(err.value)


def test_mnist_every_row_too_wide_is_caught(tmp_path):
    path = tmp_path / "train.csv"
    write_mnist_csv(path, n=12, layout="headerless")
    path.write_text("".join(line + ",0\n" for line in path.read_text().splitlines()))
    with pytest.raises(DataError, match="line 1 has 785 pixel values after the label"):
        mnist_csv.load(str(path))


def test_mnist_unexplained_parse_failure_still_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "train.csv"
    write_mnist_csv(path, n=12, layout="headerless")

    def parser_fails(*args, **kwargs):
        raise ValueError("something the row scan does not see")

    monkeypatch.setattr(mnist_csv, "_parse_polars", lambda *a: (_ for _ in ()).throw(mnist_csv._Unparsed("x")))
    monkeypatch.setattr(mnist_csv.np, "loadtxt", parser_fails)
    with pytest.raises(DataError, match=re.escape(f"{path} could not be read as a headerless file")):
        mnist_csv.load(str(path))


def test_mnist_forced_layout_that_does_not_fit(tmp_path):
    write_mnist_csv(tmp_path / "kaggle.csv", n=12, layout="kaggle")
    write_mnist_csv(tmp_path / "plain.csv", n=12, layout="headerless")
    with pytest.raises(DataError, match=r"line 1 column 1 \(label\) is 'label'.*data\.layout=kaggle"):
        mnist_csv.load(str(tmp_path / "kaggle.csv"), layout="headerless")
    with pytest.raises(DataError, match=r"plain\.csv line 1 starts with the number.*data\.layout=headerless"):
        mnist_csv.load(str(tmp_path / "plain.csv"), layout="kaggle")


def test_mnist_wrong_header_is_named(tmp_path):
    path = tmp_path / "train.csv"
    write_mnist_csv(path, n=12)
    edit_line(path, 1, lambda names: names[:-1])
    with pytest.raises(DataError, match=r"line 1 is a header of 784 fields starting with 'label'"):
        mnist_csv.load(str(path))


# --- CIFAR-10 --------------------------------------------------------------------------------


def batch_arrays(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """What a batch file holds, read the way torchvision reads it (the factory's own cross-check)."""
    with open(file, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    return batch["data"], np.array(batch["labels"])


def test_cifar_loads_train_batches_and_test_batch(tmp_path):
    folder = write_cifar10(tmp_path, n_per_batch=20, batches=("data_batch_1", "data_batch_2"))
    data = cifar10.load(str(tmp_path), val_fraction=0.25, seed=5)
    (d1, l1), (d2, l2), (dt, lt) = (batch_arrays(folder / n) for n in ("data_batch_1", "data_batch_2",
                                                                      "test_batch"))
    keep, held = held_indices(40, 0.25, 5)
    all_x, all_y = np.concatenate([d1, d2]).reshape(-1, 3, 32, 32), np.concatenate([l1, l2])
    assert data.train.x.dtype == torch.uint8 and data.train.x.shape == (30, 3, 32, 32)
    assert data.train.y.dtype == torch.int64 and len(data.val) == 10
    assert np.array_equal(data.train.x, all_x[keep]) and np.array_equal(data.val.y, all_y[held])
    assert np.array_equal(data.test.x, dt.reshape(-1, 3, 32, 32)) and np.array_equal(data.test.y, lt)
    assert data.meta.class_names == cifar10.CLASS_NAMES
    assert (data.meta.name, data.meta.in_shape, data.meta.num_outputs, data.meta.target_shape) == (
        "cifar10", (3, 32, 32), 10, ())
    assert data.meta.mean == (0.4914, 0.4822, 0.4465) and data.meta.std == (0.2470, 0.2435, 0.2616)


def test_cifar_factory_writes_the_official_opcodes(tmp_path):
    folder = write_cifar10(tmp_path, n_per_batch=10)
    ops = list(pickletools.genops((folder / "data_batch_1").read_bytes()))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 2
    globals_ = [arg for op, arg, _ in ops if "GLOBAL" in op.name]
    assert globals_ == ["numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"]
    assert not any(op.name in ("BINPUT", "BINBYTES", "SHORT_BINBYTES", "BINUNICODE") for op, _, _ in ops)
    keys = [arg for op, arg, _ in ops if op.name == "SHORT_BINSTRING" and arg in
            ("batch_label", "labels", "data", "filenames")]
    assert keys == ["batch_label", "labels", "data", "filenames"]


def test_cifar_class_names_from_meta_or_official(tmp_path):
    folder = write_cifar10(tmp_path / "a", n_per_batch=10, with_meta=False)
    assert cifar10.load(str(tmp_path / "a")).meta.class_names == cifar10.CLASS_NAMES
    names = [f"c{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(py2_pickle({b"label_names": names, b"num_vis": 3072}))
    assert cifar10.load(str(tmp_path / "a")).meta.class_names == [f"c{i}" for i in range(10)]
    (folder / "batches.meta").write_bytes(py2_pickle({b"label_names": names[:3]}))
    assert cifar10.load(str(tmp_path / "a")).meta.class_names == cifar10.CLASS_NAMES
    (folder / "batches.meta").write_bytes(b"\x80\x02}(U\x0blabel_na")  # truncated
    assert cifar10.load(str(tmp_path / "a")).meta.class_names == cifar10.CLASS_NAMES


def test_cifar_test_fraction_holds_back_part_of_train(tmp_path):
    write_cifar10(tmp_path, n_per_batch=50, with_test=False)
    data = cifar10.load(str(tmp_path), test_fraction=0.2, val_fraction=0.1, seed=1)
    assert (len(data.train), len(data.val), len(data.test)) == (36, 4, 10)
    again = cifar10.load(str(tmp_path), test_fraction=0.2, val_fraction=0.1, seed=1)
    assert torch.equal(data.test.x, again.test.x) and torch.equal(data.val.y, again.val.y)


def test_cifar_missing_test_batch_suggests_test_fraction(tmp_path):
    folder = write_cifar10(tmp_path, n_per_batch=10, with_test=False)
    with pytest.raises(DataError, match="data.test_fraction=0.2") as err:
        cifar10.load(str(tmp_path))
    assert str(folder / "test_batch") in str(err.value)


@pytest.mark.parametrize("key, kwargs", [("data.val_fraction", {"val_fraction": 0}),
                                         ("data.test_fraction", {"test_fraction": 1.0}),
                                         ("data.test_fraction", {"test_fraction": -0.5})])
def test_cifar_fractions_are_checked(tmp_path, key, kwargs):
    write_cifar10(tmp_path, n_per_batch=10)
    with pytest.raises(DataError, match=key):
        cifar10.load(str(tmp_path), **kwargs)


def test_cifar_missing_folder_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as err:
        cifar10.load(str(tmp_path / "data"))
    message = str(err.value)
    assert str(tmp_path / "data" / "cifar-10-batches-py") in message
    assert "data.download=true" in message and "data.root" in message


def test_cifar_root_pointing_at_the_batches_folder_is_explained(tmp_path):
    folder = write_cifar10(tmp_path, n_per_batch=10)
    with pytest.raises(DataError, match=re.escape(f"set data.root={tmp_path}")):
        cifar10.load(str(folder))


def test_cifar_needs_data_batch_1(tmp_path):
    write_cifar10(tmp_path, n_per_batch=10, batches=("data_batch_2",))
    with pytest.raises(DataError, match="data_batch_1 is missing; found only data_batch_2"):
        cifar10.load(str(tmp_path))
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").unlink()
    with pytest.raises(DataError, match="none of data_batch_1, .*data_batch_5 is there"):
        cifar10.load(str(tmp_path))


def test_cifar_download_skipped_when_batches_are_there(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def no_network(*args, **kwargs):
        raise AssertionError("downloaded although the batches were there")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", no_network)
    write_cifar10(tmp_path, n_per_batch=10)
    assert len(cifar10.load(str(tmp_path), download=True).test) == 10


def test_cifar_download_fetches_the_official_archive(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake_download(url, download_root, md5=None, **kwargs):
        calls.append((url, md5))
        write_cifar10(download_root, n_per_batch=10)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    assert len(cifar10.load(str(tmp_path), download=True).test) == 10
    assert calls == [(cifar10.URL, "c58f30108f718f92721af3b95e9d9d70")]


def test_cifar_download_failure_says_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match=r"Network is unreachable.*cifar-10-batches-py.*data\.download=false"):
        cifar10.load(str(tmp_path), download=True)


class _Payload:
    """Unpickling this would call `func(*args)`: what a malicious batch file does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("target", ["data_batch_1", "batches.meta"])
@pytest.mark.parametrize("how", ["os.system", "open"])
def test_cifar_malicious_pickle_is_refused_before_it_runs(tmp_path, target, how):
    folder = write_cifar10(tmp_path, n_per_batch=10)
    marker = tmp_path / "pwned"
    payload = _Payload(open, str(marker), "w")  # opening for writing creates the file
    if how == "os.system":
        payload = _Payload(os.system, f"touch {marker}")
    # the payload sits before the data, so a loader that ran it would do so first
    (folder / target).write_bytes(pickle.dumps({b"batch_label": payload, b"labels": [0], b"data": None},
                                               protocol=2))
    with pytest.raises(DataError, match="refused") as err:
        cifar10.load(str(tmp_path))
    assert str(folder / target) in str(err.value)
    assert (f"{os.system.__module__}.system" if how == "os.system" else "io.open") in str(err.value)
    assert not marker.exists()


def test_cifar_codecs_encode_only_for_latin1(tmp_path):
    folder = write_cifar10(tmp_path, n_per_batch=10)
    import codecs
    evil = pickle.dumps({b"data": _Payload(codecs.encode, "x", "rot13")}, protocol=2)
    (folder / "data_batch_1").write_bytes(evil)
    with pytest.raises(DataError, match=r"refused"):
        cifar10.load(str(tmp_path))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_repacked_python3_pickles_load(tmp_path, protocol):
    folder = write_cifar10(tmp_path, n_per_batch=10)
    data, labels = batch_arrays(folder / "data_batch_1")
    repacked = {"data": data, "labels": [np.int64(c) for c in labels], "batch_label": b"repacked"}
    (folder / "data_batch_1").write_bytes(pickle.dumps(repacked, protocol=protocol))
    loaded = cifar10.load(str(tmp_path), test_fraction=0.5, val_fraction=0.2)
    assert sorted(torch.cat([loaded.train.y, loaded.val.y, loaded.test.y]).tolist()) == sorted(labels)


def test_cifar_truncated_batch_is_named(tmp_path):
    folder = write_cifar10(tmp_path, n_per_batch=10)
    raw = (folder / "data_batch_1").read_bytes()
    (folder / "data_batch_1").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=re.escape(f"{folder / 'data_batch_1'} is truncated or corrupt")):
        cifar10.load(str(tmp_path))


@pytest.mark.parametrize("data, labels, message", [
    (np.zeros((4, 1024), np.uint8), [0, 1, 2, 3], "has data of uint8 4×1024, expected uint8 N×3072"),
    (np.zeros((4, 3072), np.float32), [0, 1, 2, 3], "has data of float32 4×3072"),
    (np.zeros((4, 3072), np.uint8), [0, 1, 2], "has 3 labels of int64 for 4 images"),
    (np.zeros((4, 3072), np.uint8), [0, 1, 10, 3], "has label 10 at index 2, expected a class 0..9"),
    (np.zeros((4, 3072), np.uint8), [0, -1, 2, 3], "has label -1 at index 1"),
    (np.zeros((4, 3072), np.uint8), [[0], [1, 2], 3, 4], "has labels that are not a flat list of integers"),
    (np.zeros((4, 3072), np.uint8), ["0", "1", "2", "3"], "has 4 labels of <U1 for 4 images"),
])
def test_cifar_bad_batch_contents_are_named(tmp_path, data, labels, message):
    folder = write_cifar10(tmp_path, n_per_batch=10)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))
    with pytest.raises(DataError) as err:
        cifar10.load(str(tmp_path))
    assert str(folder / "data_batch_1") in str(err.value) and message in str(err.value), str(err.value)


def test_cifar_batch_that_is_not_a_dict(tmp_path):
    folder = write_cifar10(tmp_path, n_per_batch=10)
    write_cifar_batch(folder / "test_batch", np.zeros((2, 3072), np.uint8), [1, 2])
    (folder / "data_batch_1").write_bytes(py2_pickle([1, 2, 3]))
    with pytest.raises(DataError, match=r"data_batch_1 holds list, expected a dict"):
        cifar10.load(str(tmp_path))


def centroid_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    """Nearest class mean fitted on the first half, scored on the second: is there a class signal?"""
    x = x.reshape(len(x), -1).astype(np.float32)
    half = len(x) // 2
    means = np.stack([x[:half][y[:half] == c].mean(0) for c in range(10)])
    guess = ((x[half:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    return float((guess == y[half:]).mean())


def test_factory_images_are_learnable_only_when_asked():
    for images in (mnist_images, cifar_images):
        assert centroid_accuracy(*images(200, seed=1)) > 0.95
        assert centroid_accuracy(*images(200, seed=1, learnable=False)) < 0.4


# --- synthetic ------------------------------------------------------------------------------------


def test_synthetic_shapes_and_meta():
    data = synthetic.load(n_train=64, n_val=16, n_test=8, noise=0.0, x_low=-1.0, x_high=3.0)
    for split, n in ((data.train, 64), (data.val, 16), (data.test, 8)):
        assert split.x.shape == split.y.shape == (n, 1) and split.x.dtype == split.y.dtype == torch.float32
        assert split.x.min() >= -1.0 and split.x.max() < 3.0
        assert torch.allclose(split.y, split.x**2)
    meta = data.meta
    assert (meta.name, meta.kind, meta.in_shape, meta.num_outputs, meta.target_shape) == (
        "synthetic_regression", "regression", (1,), 1, (1,))
    assert meta.scale == 1.0 and meta.mean is None and meta.std is None


def test_synthetic_noise_and_seeding():
    a, b, c = synthetic.load(seed=7), synthetic.load(seed=7), synthetic.load(seed=8)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, c.train.x)
    assert not torch.equal(a.train.x[:512], a.val.x)  # independent draws, not copies
    residual = a.train.y - a.train.x**2
    assert 0.04 < residual.std() < 0.06


@pytest.mark.parametrize("kwargs, key", [({"n_train": 0}, "data.n_train"), ({"n_val": -3}, "data.n_val"),
                                         ({"n_test": 2.5}, "data.n_test"), ({"noise": -0.1}, "data.noise"),
                                         ({"x_low": 1.0, "x_high": 1.0}, "data.x_low")])
def test_synthetic_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(DataError, match=re.escape(key)):
        synthetic.load(**kwargs)


# --- all readers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("module", READERS, ids=lambda m: m.__name__)
def test_readers_do_not_import_hydra(module):
    source = Path(module.__file__).read_text()
    assert not re.search(r"^\s*(import|from)\s+(hydra|omegaconf)", source, re.MULTILINE)
    assert module.__doc__ and len(module.__doc__.strip().splitlines()) <= 3


# --- normalization statistics are data config ----------------------------------------------------------


def test_normalization_comes_from_the_config(tmp_path):
    write_mnist_csv(tmp_path / "train.csv", n=20)
    assert mnist_csv.load(str(tmp_path / "train.csv"), mean=[0.5], std=[0.25]).meta.mean == (0.5,)
    none = mnist_csv.load(str(tmp_path / "train.csv"), mean=None, std=None).meta
    assert none.mean is None and none.std is None
    write_cifar10(tmp_path / "c", n_per_batch=10)
    meta = cifar10.load(str(tmp_path / "c"), mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2]).meta
    assert meta.mean == (0.5, 0.5, 0.5) and meta.std == (0.2, 0.2, 0.2)


@pytest.mark.parametrize("mean, std, message", [
    ([0.5, 0.5], [0.2, 0.2, 0.2], r"data\.mean=\[0\.5, 0\.5\] is not 3 number"),
    ([0.5, 0.5, 0.5], None, r"data\.std=None is not 3 number"),
    ([0.5, 0.5, 0.5], [0.2, 0.0, 0.2], r"data\.std=.* must be above 0"),
    ([0.5, "x", 0.5], [0.2, 0.2, 0.2], r"data\.mean=.* is not 3 number"),
])
def test_bad_normalization_names_the_key(tmp_path, mean, std, message):
    write_cifar10(tmp_path, n_per_batch=10)
    with pytest.raises(DataError, match=message):
        cifar10.load(str(tmp_path), mean=mean, std=std)


def test_cifar_archive_beside_the_missing_folder_is_pointed_out(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not really")
    with pytest.raises(DataError, match=r"holds cifar-10-python\.tar\.gz: data\.download=true checks and extracts"):
        cifar10.load(str(tmp_path))


def test_cifar_find_problems_lists_every_bad_batch(tmp_path):
    folder = write_cifar10(tmp_path, n_per_batch=10, batches=("data_batch_1", "data_batch_2"))
    (folder / "data_batch_1").write_bytes(b"\x80\x02")
    write_cifar_batch(folder / "test_batch", np.zeros((2, 3072), np.uint8), [1, 11])
    problems = cifar10.find_problems(str(tmp_path))
    assert len(problems) == 2 and "data_batch_1 is truncated" in problems[0] and "has label 11" in problems[1]


def test_mnist_find_problems_lists_every_bad_row(tmp_path):
    path = tmp_path / "train.csv"
    write_mnist_csv(path, n=20)
    for line in (3, 8, 15):
        edit_line(path, line, _set(4, "x"))
    problems = mnist_csv.find_problems(str(path), str(tmp_path / "gone.csv"))
    assert [p.split(" line ")[1][:2] for p in problems[:3]] == ["3 ", "8 ", "15"]
    assert "gone.csv" in problems[3] and "does not exist" in problems[3]
