"""mnist_csv's index layout: a CSV of image file names (and labels) beside a folder of PNG files."""

from __future__ import annotations

import numpy as np
import pytest
from factories import write_mnist_csv, write_mnist_index, write_pngs

from trainkit.data import images, index_csv, mnist_csv
from trainkit.data.base import DataError


@pytest.mark.parametrize("column", ["filename", "id"])
@pytest.mark.parametrize("where", [".", "images", "Images/train"])
def test_index_found_beside_its_csv_and_read_exactly(tmp_path, column, where):
    x, y = write_mnist_index(tmp_path / "train.csv", tmp_path / where, n=12, column=column)
    split = mnist_csv.read_split(str(tmp_path / "train.csv"), key="data.train_csv")
    assert split.x.shape == (12, 1, 28, 28) and np.array_equal(split.x[:, 0].numpy(), x)
    assert np.array_equal(split.y.numpy(), y)


def test_index_trains_like_the_other_layouts(tmp_path):
    write_mnist_index(tmp_path / "train.csv", tmp_path / "Images" / "train", n=20)
    write_mnist_index(tmp_path / "test.csv", tmp_path / "Images" / "test", n=10, seed=1)
    data = mnist_csv.load(str(tmp_path / "train.csv"), str(tmp_path / "test.csv"), val_fraction=0.2,
                          layout="index")
    assert (len(data.train), len(data.val), len(data.test)) == (16, 4, 10)


def test_images_dir_is_used_when_given(tmp_path):
    x, _ = write_mnist_index(tmp_path / "lists" / "train.csv", tmp_path / "elsewhere", n=5)
    with pytest.raises(DataError, match=r"no folder beside it holds.*data\.images_dir"):
        mnist_csv.read_split(str(tmp_path / "lists" / "train.csv"))
    split = mnist_csv.read_split(str(tmp_path / "lists" / "train.csv"), images_dir=str(tmp_path / "elsewhere"))
    assert np.array_equal(split.x[:, 0].numpy(), x)
    with pytest.raises(DataError, match=r"data\.images_dir=.*nowhere is not a folder"):
        mnist_csv.read_split(str(tmp_path / "lists" / "train.csv"), images_dir=str(tmp_path / "nowhere"))


def test_unlabeled_index_is_for_prediction_only(tmp_path):
    write_mnist_index(tmp_path / "train.csv", tmp_path / "train", n=10)
    x, _ = write_mnist_index(tmp_path / "test.csv", tmp_path / "test", n=6, labeled=False, seed=1)
    split = mnist_csv.read_split(str(tmp_path / "test.csv"))
    assert split.y is None and np.array_equal(split.x[:, 0].numpy(), x)
    with pytest.raises(DataError, match="predicted but not scored"):
        mnist_csv.load(str(tmp_path / "train.csv"), str(tmp_path / "test.csv"))
    with pytest.raises(DataError, match="training needs labels"):
        mnist_csv.load(str(tmp_path / "test.csv"))


def test_images_are_decoded_once(tmp_path, monkeypatch):
    x, _ = write_mnist_index(tmp_path / "train.csv", tmp_path, n=8)
    mnist_csv.read_split(str(tmp_path / "train.csv"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although nothing changed")

    monkeypatch.setattr(index_csv, "read_images", no_decoding)
    assert np.array_equal(mnist_csv.read_split(str(tmp_path / "train.csv")).x[:, 0].numpy(), x)
    write_pngs(tmp_path, np.zeros((1, 28, 28), np.uint8), ["1007.png"])  # an image changed: decode again
    with pytest.raises(AssertionError, match="decoded again"):
        mnist_csv.read_split(str(tmp_path / "train.csv"))


def _break(tmp_path, how):
    write_mnist_index(tmp_path / "train.csv", tmp_path, n=8)
    lines = (tmp_path / "train.csv").read_text().splitlines()
    if how == "missing image":
        (tmp_path / "1014.png").unlink()  # named on line 4
    elif how == "unreadable image":
        (tmp_path / "1014.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    elif how == "wrong size":
        write_pngs(tmp_path, np.zeros((1, 14, 14), np.uint8), ["1014.png"])
    elif how == "bad label":
        lines[3] = "1014.png,12"
    elif how == "empty label":
        lines[3] = "1014.png,"
    elif how == "fields":
        lines[3] = "1014.png,3,extra"
    elif how == "empty name":
        lines[3] = ",3"
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("how, message", [
    ("missing image", "line 4 names 1014.png, which is not in"),
    ("unreadable image", "line 4 names 1014.png: {dir}/1014.png could not be read as an image"),
    ("wrong size", "line 4 names 1014.png: {dir}/1014.png is 14×14 pixels, expected 28×28"),
    ("bad label", "line 4 column 2 (label) is '12', expected a class label 0..9"),
    ("empty label", "line 4 column 2 (label) is empty"),
    ("fields", "line 4 has 3 fields, expected 2 (filename,label)"),
    ("empty name", "line 4 column 1 (filename) is empty"),
])
def test_bad_index_rows_and_images_are_named(tmp_path, how, message):
    _break(tmp_path, how)
    with pytest.raises(DataError) as err:
        mnist_csv.load(str(tmp_path / "train.csv"))
    text = str(err.value)
    assert f"{tmp_path / 'train.csv'} line 4" in text and message.format(dir=tmp_path) in text, text
    assert "remove" in text  # and what to do about it


def test_bad_image_found_by_parallel_decoding_names_its_line(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "CHUNK", 4)
    monkeypatch.setattr(images, "SERIAL_BELOW", 8)
    write_mnist_index(tmp_path / "train.csv", tmp_path, n=20)
    (tmp_path / f"{1000 + 7 * 13}.png").write_bytes(b"broken")  # row 13 of the data, line 15 of the file
    with pytest.raises(DataError, match=f"line 15 names {1000 + 7 * 13}.png: "):
        mnist_csv.read_split(str(tmp_path / "train.csv"))


def test_header_only_index(tmp_path):
    (tmp_path / "train.csv").write_text("filename,label\n")
    with pytest.raises(DataError, match=r"train\.csv has a header .* but no rows naming images.*data\.train_csv"):
        mnist_csv.load(str(tmp_path / "train.csv"))


def test_index_layout_forced_on_a_pixel_csv_and_a_headerless_index(tmp_path):
    write_mnist_csv(tmp_path / "pixels.csv", n=10)
    with pytest.raises(DataError, match=r"data\.layout=index expects the header of an index CSV"):
        mnist_csv.read_split(str(tmp_path / "pixels.csv"), layout="index")
    (tmp_path / "names.csv").write_text("0.png,3\n1.png,4\n")
    with pytest.raises(DataError, match=r"line 1 names an image \(0\.png\) but has no header.*filename,label"):
        mnist_csv.read_split(str(tmp_path / "names.csv"))
