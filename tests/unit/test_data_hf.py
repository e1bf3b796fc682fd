"""data=hf: Hugging Face data sets written by datasets itself (save_to_disk, to_parquet, Arrow files) read exactly,
split as datasets names the splits, images decoded into the sample store (a second load maps it, an interrupted
decode continues), numeric columns as tabular samples, and every refusal one paragraph naming the key."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import assert_any_subset_of_splits_equals_the_full_load, folder_images, write_pngs
from PIL import Image

from trainkit.data import hf
from trainkit.data.base import DataError, Split, carve
from trainkit.data.images import channel_stats
from trainkit.extras import MissingExtra

datasets = pytest.importorskip("datasets")
NAMES = ["cat", "dog", "frog"]


@pytest.fixture(autouse=True)
def caches(tmp_path, monkeypatch):
    """trainkit's and datasets' caches in the test's folder, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def image_set(n: int, seed: int = 0, size: tuple[int, int] = (8, 8), colour: bool = True):
    """(a datasets.Dataset of PIL images with a ClassLabel, its pixels N×C×H×W, its labels)."""
    x, y = folder_images(n, size, colour=colour, seed=seed)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    dataset = datasets.Dataset.from_dict({"image": [Image.fromarray(image) for image in x], "label": y.tolist()},
                                         features=features)
    return dataset, x[:, None] if not colour else x.transpose(0, 3, 1, 2), y


def carved(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    keep, held = carve(Split(torch.arange(n)[:, None], None), fraction, seed)
    return keep.x[:, 0], held.x[:, 0]


def test_a_saved_dataset_dict_is_read_exactly_with_its_own_splits(tmp_path):
    parts = {name: image_set(n, seed) for seed, (name, n) in enumerate((("train", 30), ("validation", 9),
                                                                          ("test", 12)))}
    datasets.DatasetDict({name: part[0] for name, part in parts.items()}).save_to_disk(tmp_path / "saved")
    data = hf.load(str(tmp_path / "saved"))
    for ours, theirs in (("train", "train"), ("val", "validation"), ("test", "test")):
        split, (_, x, y) = getattr(data, ours), parts[theirs]
        assert np.array_equal(split.x.numpy(), x) and split.y.tolist() == y.tolist()
        assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64
    meta = data.meta
    assert (meta.name, meta.kind, meta.in_shape, meta.num_outputs, meta.class_names, meta.scale, meta.target_shape) \
        == ("hf", "classification", (3, 8, 8), 3, NAMES, 255.0, ())
    expected = channel_stats(torch.from_numpy(parts["train"][1]))
    assert meta.mean == pytest.approx(expected[0]) and meta.std == pytest.approx(expected[1])
    assert_any_subset_of_splits_equals_the_full_load(partial(hf.load, str(tmp_path / "saved")))


def test_gray_images_are_one_channel_and_one_colour_image_makes_all_rgb(tmp_path):
    gray, x, _ = image_set(20, colour=False)
    gray.save_to_disk(tmp_path / "gray")
    data = hf.load(str(tmp_path / "gray"), val_fraction=0.25, seed=3)
    keep, held = carved(20, 0.25, 3)
    assert data.meta.in_shape == (1, 8, 8) and np.array_equal(data.train.x.numpy(), x[keep])
    assert np.array_equal(data.val.x.numpy(), x[held]) and data.test is None  # a Dataset, not a dict: train only
    colour, _, _ = image_set(1, seed=5)
    datasets.concatenate_datasets([gray, colour]).save_to_disk(tmp_path / "mixed")
    mixed = hf.load(str(tmp_path / "mixed"), val_fraction=0.1, test_fraction=0.1)
    assert mixed.meta.in_shape == (3, 8, 8)
    every = torch.cat([mixed.train.x, mixed.val.x, mixed.test.x])
    same = (every[:, 0] == every[:, 1]) & (every[:, 1] == every[:, 2])
    assert int(same.flatten(1).all(1).sum()) == 20  # the gray images: their one channel in all three


@pytest.mark.parametrize("layout", ["train-00000-of-00001.parquet", "data/train/part-0.parquet"])
def test_a_parquet_folder_is_split_by_its_file_names(tmp_path, layout):
    """datasets' own naming: train-*.parquet / validation-*.parquet / test-*.parquet, or data/<split>/*.parquet."""
    written = {}
    for seed, (split, n) in enumerate((("train", 24), ("validation", 6), ("test", 9))):
        dataset, x, y = image_set(n, seed)
        file = tmp_path / "pq" / layout.replace("train", split)
        file.parent.mkdir(parents=True, exist_ok=True)
        dataset.to_parquet(file)
        written[split] = (x, y)
    data = hf.load(str(tmp_path / "pq"))
    assert np.array_equal(data.train.x.numpy(), written["train"][0])
    assert np.array_equal(data.val.x.numpy(), written["validation"][0])
    assert data.test.y.tolist() == written["test"][1].tolist() and data.meta.class_names == NAMES
    one = hf.load(str(tmp_path / "pq" / layout), val_fraction=0.25, seed=1)  # one file: the train split
    _, held = carved(24, 0.25, 1)
    assert np.array_equal(one.val.x.numpy(), written["train"][0][held]) and one.test is None


def test_an_arrow_folder_with_unlabeled_validation_and_test_splits(tmp_path):
    """A test split without labels (ClassLabel -1, as many Hub test splits have it) is read unlabeled; a validation
    split without labels would judge nothing, so one is carved from train instead."""
    (tmp_path / "arrow").mkdir()
    for seed, (split, n) in enumerate((("train", 20), ("validation", 5), ("test", 6))):
        dataset = image_set(n, seed)[0]
        if split != "train":
            dataset = dataset.map(lambda row: {"label": -1})  # datasets' "no label"
        dataset.map(lambda row: row, cache_file_name=str(tmp_path / "arrow" / f"{split}.arrow"))
    data = hf.load(str(tmp_path / "arrow"), val_fraction=0.2)
    assert len(data.train) == 16 and len(data.val) == 4 and data.val.y is not None
    assert len(data.test) == 6 and data.test.y is None


def test_tabular_columns_with_string_and_float_labels(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=40), rng.integers(0, 5, 40)
    word = np.array(["yes", "no", "maybe"])[np.arange(40) % 3]
    train = datasets.Dataset.from_dict({"a": a[:30], "b": b[:30], "word": word[:30], "score": a[:30] * 2})
    test = datasets.Dataset.from_dict({"a": a[30:], "b": b[30:], "word": np.array(["no"] * 10), "score": a[30:]})
    datasets.DatasetDict(train=train, test=test).save_to_disk(tmp_path / "table")
    data = hf.load(str(tmp_path / "table"), feature_columns=["a", "b"], label_column="word", val_fraction=0.2)
    assert data.meta.kind == "classification" and data.meta.class_names == ["maybe", "no", "yes"]
    assert data.meta.in_shape == (2,) and data.train.x.dtype == torch.float32
    assert data.test.y.tolist() == [1] * 10  # "no" is class 1 in every split, though test has no other label
    assert np.allclose(data.test.x.numpy(), np.stack([a[30:], b[30:]], 1).astype(np.float32))
    train_x = np.stack([a[:30], b[:30]], 1).astype(np.float32).astype(np.float64)
    assert data.meta.mean == pytest.approx(train_x.mean(0), rel=1e-5)  # the train split's own, per feature
    assert data.meta.std == pytest.approx(train_x.std(0), rel=1e-5)
    scores = hf.load(str(tmp_path / "table"), feature_columns=["a", "b"], label_column="score")
    assert (scores.meta.kind, scores.meta.num_outputs, scores.meta.target_shape) == ("regression", 1, (1,))
    assert scores.test.y.shape == (10, 1) and np.allclose(scores.test.y[:, 0].numpy(), a[30:])
    integers = hf.load(str(tmp_path / "table"), feature_columns=["a"], label_column="b", normalize=False)
    assert integers.meta.class_names == [str(v) for v in sorted(set(b.tolist()))] and integers.meta.mean is None


def test_a_missing_column_names_the_columns_it_has(tmp_path):
    image_set(12)[0].rename_column("label", "target").save_to_disk(tmp_path / "d")
    with pytest.raises(DataError, match=r"no column label or labels: data.path=.* has the columns image \(Image\), "
                                        r"target \(ClassLabel\). Set data.label_column"):
        hf.load(str(tmp_path / "d"))
    with pytest.raises(DataError, match=r"data.image_column=photo: .* has the columns image \(Image\), target"):
        hf.load(str(tmp_path / "d"), label_column="target", image_column="photo")
    with pytest.raises(DataError, match=r"the column target .* holds ClassLabel, not numbers; data.feature_columns"):
        hf.load(str(tmp_path / "d"), label_column="image", feature_columns=["target"])
    assert hf.load(str(tmp_path / "d"), label_column="target").meta.class_names == NAMES


def test_images_of_several_sizes_need_data_size_which_resizes_as_pillow_does(tmp_path):
    small, _, _ = image_set(4, seed=1, size=(6, 10))
    big, x, _ = image_set(10)
    datasets.concatenate_datasets([big, small]).save_to_disk(tmp_path / "d")
    with pytest.raises(DataError, match=r"not all of one size: row 0 of the train split is 8×8 \(H×W\) and row 10 "
                                        r"of the train split is 6×10. Set data.size=\[H,W\]"):
        hf.load(str(tmp_path / "d"))
    data = hf.load(str(tmp_path / "d"), size=[5, 7], val_fraction=0.5, seed=0)
    keep, _ = carved(14, 0.5, 0)
    first = int(keep[0])
    resized = np.asarray(Image.fromarray(x[first].transpose(1, 2, 0)).resize((7, 5), Image.Resampling.BILINEAR))
    assert data.meta.in_shape == (3, 5, 7) and np.array_equal(data.train.x[0].numpy(), resized.transpose(2, 0, 1))


def mapped_from(tensor: torch.Tensor, folder: Path) -> bool:
    """Whether the tensor's memory is a mapping of a file under `folder` (the process's own /proc/self/maps)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)  # address range, perms, offset, device, inode, [file]
        low, high = (int(v, 16) for v in fields[0].split("-"))
        if low <= address < high:
            return len(fields) == 6 and fields[5].startswith(str(folder))
    return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's memory map (Linux)")
def test_a_second_load_maps_the_store_instead_of_decoding(tmp_path):
    dataset = datasets.DatasetDict(train=image_set(20)[0], validation=image_set(6, 1)[0], test=image_set(8, 2)[0])
    dataset.save_to_disk(tmp_path / "d")
    first = hf.load(str(tmp_path / "d"))
    store = tmp_path / "d" / "test" / ".tkcache"
    keys = sorted(store.glob("*.json"))
    assert [k.name for k in keys] == ["data-00000-of-00001.arrow.hf-3x8x8-as-is-test.json",
                                      "data-00000-of-00001.arrow.hf-probe-test.json"]
    stamps = [k.stat().st_mtime_ns for k in keys]
    second = hf.load(str(tmp_path / "d"))
    assert [k.stat().st_mtime_ns for k in keys] == stamps  # read, not made again
    assert mapped_from(second.test.x, store) and mapped_from(second.train.x, tmp_path / "d" / "train" / ".tkcache")
    assert torch.equal(first.test.x, second.test.x) and first.meta == second.meta
    nothing = hf.load(str(tmp_path / "d"), cache=False, splits=("test",))  # data.cache=false: nothing kept
    assert torch.equal(nothing.test.x, first.test.x)
    assert sorted(store.glob("*.json")) == keys


def test_an_interrupted_decode_continues_where_it_stopped(tmp_path, monkeypatch):
    """Images stored as file paths (as datasets keeps them until it embeds them): one file missing stops the decode
    at its row; the chunks before it are kept, so once the file is back the decode skips them, as it would after a
    Ctrl-C. Proved by taking away an image of the first chunk before the second try."""
    monkeypatch.setattr(hf, "CHUNK_BYTES", 8 * 8 * 3 * 10)  # 10 images a chunk
    monkeypatch.setattr(hf, "FLUSH_BYTES", 1)  # each chunk marked done at once
    x, y = folder_images(60, (8, 8), colour=True)
    files = write_pngs(tmp_path / "png", x, [f"{i}.png" for i in range(60)])
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    dataset = datasets.Dataset.from_dict({"image": [str(f) for f in files], "label": y.tolist()}, features=features)
    (tmp_path / "arrow").mkdir()
    dataset.map(lambda row: row, cache_file_name=str(tmp_path / "arrow" / "train.arrow"))
    hf.load(str(tmp_path / "arrow"), splits=("val",))  # the images' headers are read (and kept) once
    files[45].rename(tmp_path / "away.png")
    with pytest.raises(DataError, match=r"row 45 of the train split of data.path=.* could not be read as an image"):
        hf.load(str(tmp_path / "arrow"), size=[8, 8], splits=("val",))
    (tmp_path / "away.png").rename(files[45])
    files[3].unlink()  # in the first chunk, decoded before the stop
    data = hf.load(str(tmp_path / "arrow"), size=[8, 8], val_fraction=0.5, seed=0)
    keep, held = carved(60, 0.5, 0)
    assert np.array_equal(data.train.x.numpy(), x.transpose(0, 3, 1, 2)[keep])
    assert np.array_equal(data.val.x.numpy(), x.transpose(0, 3, 1, 2)[held])


def test_refusals_are_one_paragraph_naming_the_key(tmp_path):
    image_set(6)[0].save_to_disk(tmp_path / "d")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x")
    saved = str(tmp_path / "d")
    cases = [  # (data.path, other keys, what the message says)
        (str(tmp_path / "nowhere"), {}, r"data.path=.*nowhere does not exist"),
        (str(tmp_path / "notes"), {}, r"holds no parquet or Arrow files .* it holds readme.txt"),
        (str(tmp_path / "notes" / "readme.txt"), {}, r"is a file, not a parquet or Arrow file"),
        (saved, {"kind": "ranking"}, r"data.kind='ranking' is not one of classification"),
        (saved, {"size": [8]}, r"data.size=\[8\] is not two whole numbers"),
        (saved, {"subset": "x"}, r"data.subset=x names a configuration of a data set on the Hub"),
        (saved, {"feature_columns": ["label"]}, r"names label, the label column"),
        (saved, {"feature_columns": ["label"], "size": [4, 4]}, r"data.size is for images, and data.feature_columns"),
    ]
    for path, keys, message in cases:
        with pytest.raises(DataError, match=message) as caught:
            hf.load(path, **keys)
        assert "\n" not in str(caught.value)


def test_without_the_datasets_package_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(MissingExtra, match=r'pip install "trainkit\[hf\]"'):
        hf.load(str(tmp_path))


def test_predict_reads_images_resized_as_trained_and_values_for_tables():
    from trainkit.data.base import DataMeta
    from trainkit.data.inputs import ImageInputs, ValueInputs

    images = DataMeta("hf", "classification", (3, 8, 8), 3)
    assert isinstance(hf.new_inputs(images, {"size": [8, 8]}), ImageInputs)
    assert hf.new_inputs(images, {"size": [8, 8]}).resize and not hf.new_inputs(images, {"size": None}).resize
    assert isinstance(hf.new_inputs(DataMeta("hf", "regression", (2,), 1), {}), ValueInputs)
