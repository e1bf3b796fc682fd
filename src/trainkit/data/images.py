"""Decodes folders of image files (PNG and whatever else scikit-image reads) into one uint8 N×C×H×W tensor.

Decoding runs in worker processes, in chunks; it never resizes. Caching the result is left to the caller.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from trainkit.data.base import DataError

CHUNK = 256  # files per worker task: large enough that a task's overhead is small next to its decoding
SERIAL_BELOW = 2 * CHUNK  # fewer files than this decode in this process: a pool would cost more than it saves


class ImageError(DataError):
    """One file that could not become an image of the expected shape; `index` is its position in `paths`."""

    def __init__(self, message: str, index: int, path: Path) -> None:
        super().__init__(message)
        self.index, self.path = index, path


def read_images(paths: list[Path], in_shape: tuple[int, int, int], *, workers: int | None = None) -> torch.Tensor:
    """Every file in `paths`, in order, as uint8 N×C×H×W, read with scikit-image: C=1 as grayscale
    (skimage's as_gray: luminance of RGB, RGBA composited on white), C=3 as RGB.

    Raises ImageError (a DataError) naming the first missing, unreadable or wrongly sized file.
    `workers`: processes to decode with (default: one per CPU; 0 or 1 decodes here).
    """
    channels, height, width = in_shape
    if channels not in (1, 3):
        raise ValueError(f"read_images reads 1 (grayscale) or 3 (RGB) channels, not in_shape={in_shape}")
    paths = [Path(p) for p in paths]
    out = np.empty((len(paths), channels, height, width), dtype=np.uint8)
    starts = range(0, len(paths), CHUNK)
    jobs = [(paths[s:s + CHUNK], in_shape) for s in starts]
    workers = (os.cpu_count() or 1) if workers is None else workers
    if len(paths) < SERIAL_BELOW or workers <= 1:
        results = map(_decode_chunk, jobs)
        pool = None
    else:
        pool = _pool(min(workers, len(jobs)))
        results = pool.map(_decode_chunk, jobs)
    try:
        for start, (images, problem) in zip(starts, results):
            if problem is not None:
                offset, message = problem
                raise ImageError(message, start + offset, paths[start + offset])
            out[start:start + len(images)] = images
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return torch.from_numpy(out)


def _pool(workers: int) -> Executor:
    # Forked workers start at once and import nothing; where fork is not offered (macOS, Windows) threads
    # still overlap the file reads, though the decoding then holds the GIL.
    if "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(workers)


def _decode_chunk(job: tuple[list[Path], tuple[int, int, int]]) -> tuple[np.ndarray, tuple[int, str] | None]:
    """(the chunk's images, None), or (the images before the first bad file, (its offset, what is wrong))."""
    paths, (channels, height, width) = job
    images = np.empty((len(paths), channels, height, width), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            image = _decode(path, channels)
        except FileNotFoundError:
            return images[:i], (i, f"{path} does not exist")
        except IsADirectoryError:
            return images[:i], (i, f"{path} is a directory, not an image file")
        except Exception as err:  # every decoder fails its own way on a truncated or foreign file
            return images[:i], (i, f"{path} could not be read as an image ({type(err).__name__}: {err})")
        if image.shape[1:] != (height, width):
            found = "×".join(map(str, image.shape[1:]))
            return images[:i], (i, f"{path} is {found} pixels, expected {height}×{width} (images are not resized)")
        images[i] = image
    return images, None


def _decode(path: Path, channels: int) -> np.ndarray:
    """One file as uint8 C×H×W."""
    from skimage import color, io, util  # here, not at the top: importing skimage costs half a second

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
    return image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
