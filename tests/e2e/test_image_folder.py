"""data=image_folder: torchvision's ImageFolder layout read exactly, gray or colour detected, resized on request,
decoded once and cached, bad folders named; and through the CLI: train, data check, predict on a folder."""

from __future__ import annotations

import csv
import shutil
from functools import partial

import numpy as np
import pytest
import torch
from conftest import FAST, run_cli, run_dirs
from factories import assert_any_subset_of_splits_equals_the_full_load, folder_images, write_image_folder, write_pngs
from PIL import Image

from trainkit.data import image_folder, images
from trainkit.data.base import DataError, Split, carve


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    """The decoded images are cached in $XDG_CACHE_HOME/trainkit: a fresh one per test, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def carved(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which positions carve keeps and holds back."""
    keep, held = carve(Split(torch.arange(n)[:, None], None), fraction, seed)
    return keep.x[:, 0], held.x[:, 0]


def test_train_and_test_folders_read_exactly_in_torchvision_order(tmp_path):
    from torchvision.datasets import ImageFolder

    written = write_image_folder(tmp_path / "pets", classes=("dog", "cat", "bird"), per_class={"train": 20, "test": 9})
    data = image_folder.load(str(tmp_path / "pets"), val_fraction=0.25, seed=2)
    reference = ImageFolder(str(tmp_path / "pets" / "test"))
    assert data.meta.class_names == reference.classes == ["bird", "cat", "dog"]
    assert data.test.y.tolist() == reference.targets == written["test"][1].tolist()
    assert np.array_equal(data.test.x[:, 0].numpy(), written["test"][0])
    assert np.array_equal(np.stack([np.asarray(reference[i][0].convert("L")) for i in range(9)]), written["test"][0])
    keep, held = carved(20, 0.25, 2)
    x, y = written["train"]
    assert np.array_equal(data.train.x[:, 0].numpy(), x[keep]) and data.train.y.tolist() == y[keep].tolist()
    assert np.array_equal(data.val.x[:, 0].numpy(), x[held]) and data.val.y.tolist() == y[held].tolist()
    assert data.train.x.dtype == torch.uint8 and data.train.y.dtype == torch.int64
    meta = data.meta
    assert (meta.name, meta.kind, meta.in_shape, meta.num_outputs, meta.scale) == (
        "image_folder", "classification", (1, 12, 10), 3, 255.0)
    # normalization: the training images' own (train/ before the validation carve), whichever splits are read
    assert meta.mean == pytest.approx([x.mean() / 255]) and meta.std == pytest.approx([(x / 255).std()])
    assert image_folder.load(str(tmp_path / "pets"), splits=("test",)).meta == meta
    assert image_folder.load(str(tmp_path / "pets"), normalize=False).meta.mean is None


def test_class_folders_in_root_are_carved_into_train_val_test(tmp_path):
    x, y = write_image_folder(tmp_path / "flat", per_class={"": 30})[""]
    data = image_folder.load(str(tmp_path / "flat"), val_fraction=0.2, test_fraction=0.2, seed=1)
    rest, test = carved(30, 0.2, 1)
    keep, held = carved(len(rest), 0.2, 1)
    assert np.array_equal(data.test.x[:, 0].numpy(), x[test]) and data.test.y.tolist() == y[test].tolist()
    assert np.array_equal(data.train.x[:, 0].numpy(), x[rest][keep])
    assert np.array_equal(data.val.x[:, 0].numpy(), x[rest][held])
    assert image_folder.load(str(tmp_path / "flat")).test is None  # no test/ and no test_fraction: no test split


def test_a_val_folder_is_the_validation_split(tmp_path):
    written = write_image_folder(tmp_path / "d", per_class={"train": 9, "val": 6, "test": 3})
    data = image_folder.load(str(tmp_path / "d"))
    assert len(data.train) == 9 and np.array_equal(data.val.x[:, 0].numpy(), written["val"][0])


def test_one_colour_image_makes_every_image_rgb(tmp_path):
    write_image_folder(tmp_path / "d", per_class={"train": 6})
    first = sorted((tmp_path / "d" / "train").rglob("*.png"))[0]
    assert images.probe_images([first])[0, 2] == 0 and Image.open(first).mode == "L"
    assert image_folder.load(str(tmp_path / "d")).meta.in_shape == (1, 12, 10)
    pixel = np.asarray(Image.open(first))
    Image.fromarray(np.stack([pixel, pixel, np.zeros_like(pixel)], axis=-1)).save(first)  # now in colour
    data = image_folder.load(str(tmp_path / "d"))
    assert data.meta.in_shape == (3, 12, 10) and len(data.meta.mean) == 3
    everything = torch.cat([data.train.x, data.val.x])
    widened = everything[(everything[:, 0] == everything[:, 2]).flatten(1).all(1)]  # the gray images
    assert len(widened) == 5 and torch.equal(widened[:, 0], widened[:, 1])


@pytest.mark.parametrize("mode, colour", [("RGBA", 1), ("LA", 0), ("P-gray", 0), ("P-colour", 1), ("1", 0), ("I;16", 0)])
def test_modes_are_told_gray_or_colour(tmp_path, mode, colour):
    rgb = folder_images(1, (8, 8), colour=True)[0][0]
    gray = rgb[..., 0]
    image = {
        "RGBA": lambda: Image.fromarray(rgb).convert("RGBA"),
        "LA": lambda: Image.fromarray(gray).convert("LA"),
        "P-gray": lambda: Image.fromarray(gray).convert("RGB").convert("P"),
        "P-colour": lambda: Image.fromarray(rgb).convert("P"),
        "1": lambda: Image.fromarray(gray).convert("1"),
        "I;16": lambda: Image.fromarray(gray.astype(np.uint16) * 257),
    }[mode]()
    image.save(tmp_path / "a.png")
    assert images.probe_images([tmp_path / "a.png"]).tolist() == [[8, 8, colour]]
    shape = (3 if colour else 1, 8, 8)
    assert images.read_images([tmp_path / "a.png"], shape).shape == (1, *shape)


def test_data_size_resizes_and_mixed_sizes_without_it_name_two_files(tmp_path):
    write_image_folder(tmp_path / "d", per_class={"train": 6})
    odd = tmp_path / "d" / "train" / "dog" / "odd.png"
    write_pngs(odd.parent, np.full((1, 30, 24), 128, np.uint8), [odd.name])
    with pytest.raises(DataError) as err:
        image_folder.load(str(tmp_path / "d"))
    first = sorted((tmp_path / "d" / "train" / "cat").iterdir())[0]
    assert f"{first} is 12×10 (H×W) and {odd} is 30×24" in str(err.value)
    assert "data.size=[H,W]" in str(err.value) and "data.size=[12,10]" in str(err.value)
    data = image_folder.load(str(tmp_path / "d"), size=[16, 8])
    assert data.meta.in_shape == (1, 16, 8) and data.train.x.shape[1:] == (1, 16, 8)
    every = torch.cat([data.train.x, data.val.x])
    assert (every == 128).flatten(1).all(1).sum() == 1  # the odd one, resized: a flat picture stays flat
    with pytest.raises(DataError, match=r"data\.size=\[16\] is not two whole numbers"):
        image_folder.load(str(tmp_path / "d"), size=[16])


@pytest.mark.parametrize("problem, message", [
    ("empty class", r"the class folder {d}/train/dog holds no images"),
    ("stray file", r"{d}/train/cat/notes\.txt is not an image file .* Move it out"),
    ("broken image", r"{d}/train/cat/001\.png could not be read as an image"),
    ("other classes", r"{d}/train and {d}/test hold different class folders \(only train/ has frog; only test/ "
                      r"has fish\)"),
    ("no classes", r"data\.root={d}/train/cat holds no class folders"),
    ("missing", r"data\.root={d}/nowhere does not exist"),
])
def test_bad_folders_are_named(tmp_path, problem, message):
    d = tmp_path / "d"
    write_image_folder(d, per_class={"train": 9, "test": 3})
    root = d
    if problem == "empty class":
        shutil.rmtree(d / "train" / "dog")
        (d / "train" / "dog").mkdir()
        (d / "train" / "dog" / ".DS_Store").write_bytes(b"\0")  # hidden files are not images, nor problems
    elif problem == "stray file":
        (d / "train" / "cat" / "notes.txt").write_text("hello")
    elif problem == "broken image":
        (sorted((d / "train" / "cat").iterdir())[0]).rename(d / "train" / "cat" / "001.png")
        (d / "train" / "cat" / "001.png").write_bytes(b"not a png")
    elif problem == "other classes":
        (d / "test" / "frog").rename(d / "test" / "fish")
    elif problem == "no classes":
        root = d / "train" / "cat"
    else:
        root = d / "nowhere"
    with pytest.raises(DataError, match=message.format(d=d)):
        image_folder.load(str(root))
    if problem in ("stray file", "broken image", "empty class"):
        found = image_folder.find_problems(str(root))
        assert len(found) == 1 and str(d) in found[0]


def test_decoded_once_then_read_from_the_cache_until_an_image_changes(tmp_path, monkeypatch, cache_home):
    write_image_folder(tmp_path / "d", per_class={"train": 9, "test": 3})
    first = image_folder.load(str(tmp_path / "d"))
    assert not list((tmp_path / "d").rglob(".tk*"))  # the data folder stays as torchvision's ImageFolder reads it
    assert list(cache_home.rglob("*.npy"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(image_folder, "read_images", no_decoding)
    monkeypatch.setattr(image_folder, "probe_images", no_decoding)
    again = image_folder.load(str(tmp_path / "d"))
    assert torch.equal(again.train.x, first.train.x) and torch.equal(again.test.y, first.test.y)
    changed = sorted((tmp_path / "d" / "test" / "cat").iterdir())[0]
    write_pngs(changed.parent, np.zeros((1, 12, 10), np.uint8), [changed.name])
    with pytest.raises(AssertionError, match="decoded again"):
        image_folder.load(str(tmp_path / "d"))
    monkeypatch.undo()
    assert image_folder.load(str(tmp_path / "d"), cache=False).test.x[0].max() == 0


def test_train_then_predict_a_folder_through_the_cli(tmp_path, monkeypatch, capsys):
    """A tiny colour folder at 12×10, trained at 16×16 (data.size) by `trainkit train`; `trainkit predict` (in this
    process, by the CLI's own path: one torch start less) resizes a folder of new images of another size to the
    model's 16×16 and names the classes by their folders."""
    from trainkit.api import run

    write_image_folder(tmp_path / "pets", colour=True, per_class={"train": 60, "test": 15})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    run_cli("train", "data=image_folder", f"data.root={tmp_path / 'pets'}", "data.size=[16,16]", "model=cnn",
            "trainer.max_epochs=2", "data.batch_size=16", *FAST, cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    x, y = folder_images(6, (20, 14), colour=True, seed=7)
    write_pngs(tmp_path / "new", x, [f"{i}.png" for i in range(6)])
    monkeypatch.chdir(tmp_path)
    run("predict", [f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", f"input={tmp_path / 'new'}",
                    f"output={tmp_path / 'p.csv'}"])
    assert "wrote 6 predictions" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["filename"] for r in rows] == [f"{i}.png" for i in range(6)]
    names = ["cat", "dog", "frog"]
    assert sum(r["label"] == names[c] for r, c in zip(rows, y)) >= 4, rows  # the band's row: learned, not guessed


def test_data_check_runs_as_the_cli_does(tmp_path, monkeypatch, capsys):
    """`trainkit data check data=image_folder data.root=DIR`, in this process (trainkit.api.run, the CLI's checks and files)."""
    from trainkit.api import run

    write_image_folder(tmp_path / "pets", colour=True, per_class={"train": 30, "test": 6})
    monkeypatch.chdir(tmp_path)
    result = run("data check", ["data=image_folder", f"data.root={tmp_path / 'pets'}"])
    out = capsys.readouterr().out
    assert "3 classes; one sample is 3×12×10 uint8" in out and "frog" in out, out
    assert result["class_names"] == ["cat", "dog", "frog"] and [s["samples"] for s in result["splits"]] == [27, 3, 6]
    (tmp_path / "pets" / "train" / "dog" / "notes.txt").write_text("x")
    (tmp_path / "pets" / "train" / "cat" / "000.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="2 fatal problems"):
        run("data check", ["data=image_folder", f"data.root={tmp_path / 'pets'}"])
    out = capsys.readouterr().out
    assert "notes.txt is not an image file" in out and "000.png could not be read as an image" in out, out


@pytest.mark.parametrize("layout", ["train/ test/", "class folders, test_fraction"])
def test_any_subset_of_splits_equals_the_full_load(tmp_path, layout):
    """What `load(splits=...)` returns for each subset is that part of the full load, with the same metadata."""
    if layout == "train/ test/":
        write_image_folder(tmp_path / "d", per_class={"train": 12, "test": 6})
        keys = {}
    else:
        write_image_folder(tmp_path / "d", per_class={"": 20})
        keys = {"test_fraction": 0.25}
    assert_any_subset_of_splits_equals_the_full_load(partial(image_folder.load, str(tmp_path / "d"), seed=5, **keys))
