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

    monkeypatch.setattr(index_csv, "decode_into", no_decoding)
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


# --- read_file_list: the same parser, for prediction ---------------------------------------------------


@pytest.mark.parametrize("column", ["filename", "id", "path"])
@pytest.mark.parametrize("where", [".", "images", "Images/test"])
def test_file_list_names_the_files_training_would_read(tmp_path, column, where):
    write_mnist_index(tmp_path / "test.csv", tmp_path / where, n=6, column=column, labeled=column != "id")
    files, names = index_csv.read_file_list(tmp_path / "test.csv")
    ids = [str(1000 + 7 * i) for i in range(6)]
    assert names == (ids if column == "id" else [f"{i}.png" for i in ids])  # as written
    assert files == [tmp_path / where / f"{i}.png" for i in ids]
    split = mnist_csv.read_split(str(tmp_path / "test.csv"), cache=False)  # training reads the same files
    assert np.array_equal(split.x.numpy(), images.read_images(files, (1, 28, 28)).numpy())


def test_path_column_trains_too(tmp_path):
    x, y = write_mnist_index(tmp_path / "train.csv", tmp_path, n=6, column="path")
    assert "path" in index_csv.NAME_COLUMNS
    split = mnist_csv.read_split(str(tmp_path / "train.csv"))
    assert np.array_equal(split.x[:, 0].numpy(), x) and np.array_equal(split.y.numpy(), y)


def test_file_list_ignores_labels_and_takes_a_headerless_list(tmp_path):
    write_pngs(tmp_path / "pics", np.zeros((2, 28, 28), np.uint8), ["a.png", "b.png"])
    (tmp_path / "labels.csv").write_text("filename,label\npics/a.png,cat\npics/b.png,\n")
    files, names = index_csv.read_file_list(tmp_path / "labels.csv")
    assert names == ["pics/a.png", "pics/b.png"] and files == [tmp_path / "pics" / "a.png", tmp_path / "pics" / "b.png"]
    with pytest.raises(DataError, match=r"line 2 column 2 \(label\) is 'cat'"):  # training reads them
        mnist_csv.read_split(str(tmp_path / "labels.csv"))
    (tmp_path / "bare.csv").write_text("\npics/b.png,3\n\npics/a.png,1\n")
    files, names = index_csv.read_file_list(tmp_path / "bare.csv")
    assert names == ["pics/b.png", "pics/a.png"] and files[0] == tmp_path / "pics" / "b.png"


def test_file_list_takes_absolute_names(tmp_path):
    (path,) = write_pngs(tmp_path / "far" / "away", np.zeros((1, 28, 28), np.uint8), ["x.png"])
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "abs.csv").write_text(f"file\n{path}\n{path.with_suffix('')}\n")
    files, names = index_csv.read_file_list(tmp_path / "lists" / "abs.csv")
    assert files == [path, path] and names == [str(path), str(path.with_suffix(""))]


@pytest.mark.parametrize("how", ["fields", "empty name", "missing image"])
def test_file_list_row_errors_are_the_training_errors(tmp_path, how):
    _break(tmp_path, how)
    with pytest.raises(DataError) as trained:
        mnist_csv.read_split(str(tmp_path / "train.csv"))
    with pytest.raises(DataError) as listed:
        index_csv.read_file_list(tmp_path / "train.csv")
    assert str(trained.value).startswith("mnist_csv: ") and str(listed.value).startswith("index_csv: ")
    assert str(listed.value).split(": ", 1)[1] == str(trained.value).split(": ", 1)[1]
    assert f"{tmp_path / 'train.csv'} line 4" in str(listed.value)


@pytest.mark.parametrize("text, message", [
    ("", r"list\.csv is empty\. An index CSV starts with a header that names a file column \(one of filename, "),
    ("name,label\n0.png,1\n", r"list\.csv line 1 is 'name,label', not the header of an index CSV.*Add the header"),
    ("filename,label,extra\n0.png,1,2\n", r"line 1 is 'filename,label,extra', not the header"),
    ("0.png,1,2\n", r"list\.csv line 1 has 3 fields, expected 2 \(filename,label\).*Fix or remove that row"),
    ("filename\n", r"list\.csv has a header \(line 1: filename\) but no rows naming images.*Set input to"),
    ("file\nnowhere.png\n", r"no folder beside it holds the image its line 2 names, nowhere\.png .*Put the images "
                            r"beside list\.csv"),
])
def test_file_list_errors_name_file_line_and_fix(tmp_path, text, message):
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        index_csv.read_file_list(tmp_path / "list.csv")


def test_file_list_messages_say_who_reads(tmp_path):
    (tmp_path / "list.csv").write_text("file\na.png,b.png\n")
    with pytest.raises(DataError, match=r"^predict: .*list\.csv line 2 has 2 fields, expected 1 \(file\)"):
        index_csv.read_file_list(tmp_path / "list.csv", where=index_csv.Where("predict", "input", dir_key=None))


def test_training_and_prediction_share_one_parser(tmp_path, monkeypatch):
    write_mnist_index(tmp_path / "train.csv", tmp_path, n=4)
    calls = []
    parse = index_csv._read_rows

    def spy(*args, **kwargs):
        calls.append(args[0])
        return parse(*args, **kwargs)

    monkeypatch.setattr(index_csv, "_read_rows", spy)
    mnist_csv.read_split(str(tmp_path / "train.csv"), cache=False)
    index_csv.read_file_list(tmp_path / "train.csv")
    assert calls == [tmp_path / "train.csv"] * 2


def test_the_file_column_is_found_by_name_not_by_place(tmp_path):
    """`id,filename` (an id column first) lists the files of its filename column; `label,file` trains too."""
    from factories import write_pngs, mnist_images
    from trainkit.data.index_csv import Where, read_file_list, read_index

    x, y = mnist_images(3, seed=5)
    write_pngs(tmp_path, x, ["a.png", "b.png", "c.png"])
    (tmp_path / "list.csv").write_text("id,filename\n7,b.png\n8,a.png\n")
    files, names = read_file_list(tmp_path / "list.csv")
    assert names == ["b.png", "a.png"] and [f.name for f in files] == ["b.png", "a.png"]
    (tmp_path / "train.csv").write_text("label,file\n" + "".join(f"{k},{n}\n" for k, n in zip(y, "abc")))
    split = read_index(tmp_path / "train.csv", (1, 28, 28), 10, Where("mnist_csv", "data.train_csv"), cache=False)
    assert split.y.tolist() == y.tolist() and (split.x[:, 0].numpy() == x).all()
