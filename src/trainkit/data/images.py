"""Decodes folders of image files (PNG and whatever else scikit-image reads) into one uint8 N×C×H×W tensor.

Decoding runs in worker processes, in chunks, and resizes only when asked to; `probe_images` reads just the
headers (size, colour) to decide the shape first. Caching the result is left to the caller.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainkit.data.base import DataError, regular_file

CHUNK = 256  # files per worker task: large enough that a task's overhead is small next to its decoding
SERIAL_BELOW = 2 * CHUNK  # fewer files than this decode in this process: a pool would cost more than it saves
# What a folder of images may hold: index CSVs' suffixes and torchvision ImageFolder's (PPM, PGM) together.
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GRAY_MODES = {"1", "L", "LA", "La", "I", "F"}  # PIL modes without colour; also I;16 and its kin (startswith "I")


class ImageError(DataError):
    """One file that could not become an image of the expected shape; `index` is its position in `paths`."""

    def __init__(self, message: str, index: int, path: Path) -> None:
        super().__init__(message)
        self.index, self.path = index, path


def read_images(paths: list[Path], in_shape: tuple[int, int, int], *, workers: int | None = None,
                resize: bool = False) -> torch.Tensor:
    """Every file in `paths`, in order, as uint8 N×C×H×W, read with scikit-image: C=1 as grayscale
    (skimage's as_gray: luminance of RGB, RGBA composited on white), C=3 as RGB. `resize`: a picture of
    another size is resized to H×W (bilinear, antialiased, as torchvision's Resize); else it is an error.

    Raises ImageError (a DataError) naming the first missing, unreadable or wrongly sized file.
    `workers`: processes to decode with (default: one per CPU; 0 or 1 decodes here).
    """
    channels, height, width = in_shape
    if channels not in (1, 3):
        raise ValueError(f"read_images reads 1 (grayscale) or 3 (RGB) channels, not in_shape={in_shape}")
    paths = [Path(p) for p in paths]
    out = np.empty((len(paths), channels, height, width), dtype=np.uint8)
    jobs = [(chunk, in_shape, resize) for chunk in _chunks(paths)]
    for start, images in _run(_decode_chunk, jobs, paths, workers):
        out[start:start + len(images)] = images
    return torch.from_numpy(out)


def probe_images(paths: list[Path], *, workers: int | None = None) -> np.ndarray:
    """int64 N×3: each file's height, width, and 1 if it has colour (RGB, RGBA, CMYK, a palette that is not all
    gray), 0 if gray (L, LA, 1-bit, 16-bit, a gray palette). Reads headers only, except of palette images.

    Raises ImageError naming the first file that is missing or not an image."""
    paths = [Path(p) for p in paths]
    out = np.empty((len(paths), 3), dtype=np.int64)
    for start, rows in _run(_probe_chunk, list(_chunks(paths)), paths, workers):
        out[start:start + len(rows)] = rows
    return out


def channel_stats(x: torch.Tensor, scale: float = 255.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 N×C×H×W pixels scaled to 0..1: the normalization a reader computes from
    its training split. From each channel's histogram of the 256 values, exactly, with no float copy of the split
    (which would be gigabytes, and seconds, for CIFAR-10)."""
    values = torch.arange(256, dtype=torch.float64) / scale
    means, stds = [], []
    for channel in range(x.shape[1]):
        counts = torch.bincount(x[:, channel].reshape(-1), minlength=256).to(torch.float64)
        total = max(1.0, float(counts.sum()))
        mean = float((counts * values).sum()) / total
        means.append(mean)
        stds.append(max(0.0, float((counts * values * values).sum()) / total - mean * mean) ** 0.5)
    return tuple(means), tuple(stds)


def _chunks(paths: list[Path]) -> Iterable[list[Path]]:
    return (paths[s:s + CHUNK] for s in range(0, len(paths), CHUNK))


def _run(work: Callable[[Any], tuple[Any, tuple[int, str] | None]], jobs: list[Any], paths: list[Path],
         workers: int | None) -> Iterable[tuple[int, Any]]:
    """(start, result) of `work` on each chunk, in order, in worker processes when there are many files; the
    first problem a chunk reports becomes an ImageError naming its file."""
    workers = (os.cpu_count() or 1) if workers is None else workers
    if len(paths) < SERIAL_BELOW or workers <= 1:
        results, pool = map(work, jobs), None
    else:
        pool = _pool(min(workers, len(jobs)))
        results = pool.map(work, jobs)
    try:
        for start, (result, problem) in zip(range(0, len(paths), CHUNK), results):
            if problem is not None:
                offset, message = problem
                raise ImageError(message, start + offset, paths[start + offset])
            yield start, result
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _pool(workers: int) -> Executor:
    # Forked workers start at once and import nothing; where fork is not offered (macOS, Windows) threads
    # still overlap the file reads, though the decoding then holds the GIL.
    if "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(workers)


def _unreadable(path: Path, err: Exception) -> str:
    if isinstance(err, DataError):  # not a regular file (regular_file says what it is)
        return str(err).removesuffix(" Give a file.").rstrip(".")
    if isinstance(err, FileNotFoundError):
        return f"{path} does not exist"
    if isinstance(err, IsADirectoryError):
        return f"{path} is a directory, not an image file"
    return f"{path} could not be read as an image ({type(err).__name__}: {err})"


def _decode_chunk(job: tuple[list[Path], tuple[int, int, int], bool]) -> tuple[np.ndarray, tuple[int, str] | None]:
    """(the chunk's images, None), or (the images before the first bad file, (its offset, what is wrong))."""
    paths, (channels, height, width), resize = job
    images = np.empty((len(paths), channels, height, width), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            image = _decode(path, channels, (height, width) if resize else None)
        except Exception as err:  # every decoder fails its own way on a truncated or foreign file
            return images[:i], (i, _unreadable(path, err))
        if image.shape[1:] != (height, width):
            found = "×".join(map(str, image.shape[1:]))
            return images[:i], (i, f"{path} is {found} pixels, expected {height}×{width} (images are not resized)")
        images[i] = image
    return images, None


def _decode(path: Path, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """One file as uint8 C×H×W; resized to `size` (H, W) when given and different."""
    from skimage import color, io, util  # here, not at the top: importing skimage costs half a second

    regular_file(path, "")  # a FIFO would block the decoder for ever
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # imageio's legacy plugins, tried on a foreign file
        image = io.imread(path)
    if image.ndim == 3 and image.shape[-1] == 2:  # gray + alpha: skimage's as_gray does not take it
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] == 4:
        image = color.rgba2rgb(image)  # on white, as skimage's as_gray does
    if image.ndim == 3 and image.shape[-1] != 3:
        raise ValueError(f"{image.shape[-1]} channels per pixel, expected gray, RGB or RGBA")
    if image.ndim not in (2, 3):
        raise ValueError(f"an array of shape {image.shape}, expected one 2-D picture (animations are not read)")
    if channels == 1 and image.ndim == 3:
        image = color.rgb2gray(image)
    if channels == 3 and image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lossy conversion": 16-bit and float pictures become 8-bit on purpose
        image = util.img_as_ubyte(image)
    if size is not None and image.shape[:2] != tuple(size):
        image = _resize(image, size)
    return image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 H×W(×3) resized to `size` as torchvision's transforms.Resize resizes a PIL image: bilinear, and
    antialiased when shrinking. Pillow's resize: scikit-image's is about 50 times slower on small pictures."""
    from PIL import Image

    height, width = size
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _probe_chunk(paths: list[Path]) -> tuple[np.ndarray, tuple[int, str] | None]:
    rows = np.empty((len(paths), 3), dtype=np.int64)
    for i, path in enumerate(paths):
        try:
            rows[i] = _probe(path)
        except Exception as err:  # Pillow names what it could not identify in several ways
            return rows[:i], (i, _unreadable(path, err))
    return rows, None


def _probe(path: Path) -> tuple[int, int, int]:
    """(height, width, has colour) from the file's header. Pillow, because scikit-image decodes the whole
    picture to tell its size; the pixels are decoded later by scikit-image (through imageio's Pillow plugin)."""
    from PIL import Image

    regular_file(path, "")
    with Image.open(path) as image:
        width, height = image.size
        mode = image.mode
        if mode in ("P", "PA"):  # a palette: colour only if a pixel's entry is not gray
            rgb = np.asarray(image.convert("RGB"))
            colour = bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())
        else:
            colour = not (mode in GRAY_MODES or mode.startswith("I;"))
    return height, width, int(colour)
