"""read_images: folders of image files as one uint8 N×C×H×W tensor, decoded in parallel, bad files named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import mnist_images, write_pngs
from PIL import Image

from trainkit.data import images
from trainkit.data.base import DataError
from trainkit.data.images import ImageError, read_images


def test_grayscale_pngs_read_exactly_in_the_given_order(tmp_path):
    x, _ = mnist_images(6)
    paths = write_pngs(tmp_path, x, [f"{i}.png" for i in range(6)])
    out = read_images(paths[::-1], (1, 28, 28))
    assert out.dtype == torch.uint8 and out.shape == (6, 1, 28, 28)
    assert np.array_equal(out[:, 0].numpy(), x[::-1])


def test_colour_files_become_grayscale_as_skimage_does(tmp_path):
    gray = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    rgb = np.stack([gray] * 3, axis=-1)  # equal channels: luminance is the same value
    rgba = np.concatenate([rgb, np.full((28, 28, 1), 255, np.uint8)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(gray).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # 16-bit: scaled, not clipped
    out = read_images([tmp_path / n for n in ("rgb.png", "rgba.png", "la.png", "g16.png")], (1, 28, 28))
    for image in out:
        assert np.abs(image[0].numpy().astype(int) - gray).max() <= 1


def test_three_channels_read_rgb_and_widen_gray(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    paths = write_pngs(tmp_path, rgb, ["a.png", "b.png"])
    gray = write_pngs(tmp_path, rgb[:1, :, :, 0], ["g.png"])
    out = read_images([*paths, *gray], (3, 32, 32))
    assert out.shape == (3, 3, 32, 32)
    assert np.array_equal(out[:2].numpy(), rgb.transpose(0, 3, 1, 2))
    assert all(np.array_equal(out[2, c].numpy(), rgb[0, :, :, 0]) for c in range(3))


def test_no_paths_is_an_empty_batch():
    assert read_images([], (1, 28, 28)).shape == (0, 1, 28, 28)


@pytest.mark.parametrize("problem, message", [
    ("missing", "does not exist"),
    ("garbage", "could not be read as an image"),
    ("truncated", "could not be read as an image"),
    ("size", "is 32×28 pixels, expected 28×28 (images are not resized)"),
    ("directory", "is a directory"),
])
def test_bad_file_is_named_with_its_position(tmp_path, problem, message):
    x, _ = mnist_images(5)
    paths = write_pngs(tmp_path, x, [f"{i}.png" for i in range(5)])
    bad = paths[3]
    if problem == "missing":
        bad.unlink()
    elif problem == "garbage":
        bad.write_bytes(b"not a png at all")
    elif problem == "truncated":
        bad.write_bytes(bad.read_bytes()[:60])
    elif problem == "size":
        Image.fromarray(np.zeros((32, 28), np.uint8)).save(bad)
    else:
        bad.unlink()
        bad.mkdir()
    with pytest.raises(ImageError) as err:
        read_images(paths, (1, 28, 28))
    assert isinstance(err.value, DataError) and err.value.index == 3 and err.value.path == bad
    assert str(bad) in str(err.value) and message in str(err.value), str(err.value)


def test_parallel_decoding_keeps_order_and_finds_the_bad_file(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "CHUNK", 4)
    monkeypatch.setattr(images, "SERIAL_BELOW", 8)
    x, _ = mnist_images(22)
    paths = write_pngs(tmp_path, x, [f"{i}.png" for i in range(22)])
    out = read_images(paths, (1, 28, 28), workers=2)
    assert np.array_equal(out[:, 0].numpy(), x)
    paths[13].write_bytes(b"broken")
    with pytest.raises(ImageError) as err:
        read_images(paths, (1, 28, 28), workers=2)
    assert err.value.index == 13 and err.value.path == paths[13]


def test_only_one_or_three_channels():
    with pytest.raises(ValueError, match="1 \\(grayscale\\) or 3 \\(RGB\\)"):
        read_images([], (2, 28, 28))
