"""Decodes folders of image files (PNG and whatever else scikit-image reads) into one uint8 N×C×H×W tensor.

Decoding runs in worker processes, in chunks, and resizes only when asked to; `probe_images` reads just the
headers (size, colour) to decide the shape first. `decode_into` writes straight into a sample store's file (each
worker opens the memory map itself), so a folder of any size decodes in constant memory; what it decodes into, and
whether it is kept, is the caller's.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
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
    paths = _as_paths(paths)
    out = np.empty((len(paths), channels, height, width), dtype=np.uint8)
    jobs = [(chunk, in_shape, resize) for chunk in _chunks(paths)]
    for start, images in _run(_decode_chunk, jobs, paths, workers):
        out[start:start + len(images)] = images
    return torch.from_numpy(out)


def probe_images(paths: list[Path], *, workers: int | None = None, skip: list[tuple[int, str]] | None = None
                 ) -> np.ndarray:
    """int64 N×3: each file's height, width, and 1 if it has colour (RGB, RGBA, CMYK, a palette that is not all
    gray), 0 if gray (L, LA, 1-bit, 16-bit, a gray palette). Reads headers only, except of palette images.

    Raises ImageError naming the first file that is missing or not an image; given a list `skip`, such a file's row
    is -1 instead and (its index, what is wrong) is appended to `skip`."""
    paths = _as_paths(paths)
    out = np.empty((len(paths), 3), dtype=np.int64)
    jobs = [(chunk, skip is not None) for chunk in _chunks(paths)]
    for start, rows in _run(_probe_chunk, jobs, paths, workers, skip):
        out[start:start + len(rows)] = rows
    return out


def decode_into(file: Path, paths: list[Path], in_shape: tuple[int, int, int], *, resize: bool = False,
                done: Iterable[int] = (), completed: Callable[[int, list[tuple[int, str]]], None] | None = None,
                skip: bool = False, workers: int | None = None, label: str = "decode") -> None:
    """Decodes `paths` into the uint8 N×C×H×W .npy file `file` (made beforehand, e.g. by the store's Writer), chunk
    by chunk in worker processes that write the rows themselves: no image passes through this process, so memory
    does not grow with the folder. Chunks in `done` are left as they are (a decode that continues); after each
    chunk is flushed, `completed(chunk, problems)` is called with the (index, what is wrong) of the files it could
    not decode, whose rows are left zero. Without `skip`, the first such file raises ImageError instead (its chunk
    is not completed). A progress bar (count, rate, time left) shows on a terminal."""
    paths = _as_paths(paths)
    done = set(done)
    pending = [c for c in range(-(-len(paths) // CHUNK)) if c not in done]
    jobs = [(str(file), c * CHUNK, paths[c * CHUNK:(c + 1) * CHUNK], in_shape, resize) for c in pending]
    workers = _workers(workers)
    with progress_bar(label, len(paths), len(paths) - sum(len(j[2]) for j in jobs)) as advance:
        for job, problems in _unordered(_decode_into, jobs, workers if len(paths) >= SERIAL_BELOW else 1):
            start = job[1]
            if problems and not skip:
                offset, message = problems[0]
                raise ImageError(message, start + offset, paths[start + offset])
            if completed is not None:
                completed(start // CHUNK, [(start + offset, message) for offset, message in problems])
            advance(len(job[2]))


def channel_stats(x: torch.Tensor, scale: float = 255.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 N×C×H×W pixels scaled to 0..1: the normalization a reader computes from
    its training split. From each channel's histogram of the 256 values, exactly, with no float copy of the split
    (which would be gigabytes, and seconds, for CIFAR-10)."""
    values = torch.arange(256, dtype=torch.float64) / scale
    histograms = torch.zeros(x.shape[1], 256, dtype=torch.int64)
    step = max(1, (16 << 20) // max(1, x[0].numel()))  # rows at a time: a channel of a big store is not copied whole
    for start in range(0, len(x), step):
        rows = x[start:start + step]
        for channel in range(x.shape[1]):
            histograms[channel] += torch.bincount(rows[:, channel].reshape(-1), minlength=256)
    means, stds = [], []
    for channel in range(x.shape[1]):
        counts = histograms[channel].to(torch.float64)
        total = max(1.0, float(counts.sum()))
        mean = float((counts * values).sum()) / total
        means.append(mean)
        stds.append(max(0.0, float((counts * values * values).sum()) / total - mean * mean) ** 0.5)
    return tuple(means), tuple(stds)


def _chunks(paths: list[Path]) -> Iterable[list[Path]]:
    return (paths[s:s + CHUNK] for s in range(0, len(paths), CHUNK))


def _as_paths(paths: list[Path] | list[str]) -> list[Path]:
    """The list itself when it holds Paths already: a copy would be one more object per file of a big folder."""
    return paths if all(isinstance(p, Path) for p in paths) else [Path(p) for p in paths]  # type: ignore[return-value]


def _workers(workers: int | None) -> int:
    if workers is not None:
        return workers
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use (a SLURM job's, a container's)
    except AttributeError:
        return os.cpu_count() or 1


def _run(work: Callable[[Any], tuple[Any, Any]], jobs: list[Any], paths: list[Path], workers: int | None,
         skip: list[tuple[int, str]] | None = None) -> Iterable[tuple[int, Any]]:
    """(start, result) of `work` on each chunk, in order, in worker processes when there are many files. A chunk
    reports its problems as (offset, message) pairs (or one pair, or None); the first becomes an ImageError naming
    its file, unless `skip` is a list, which collects them all as (index, message)."""
    workers = _workers(workers)
    if len(paths) < SERIAL_BELOW or workers <= 1:
        results, pool = map(work, jobs), None
    else:
        pool = _pool(min(workers, len(jobs)))
        results = pool.map(work, jobs)
    try:
        for start, (result, problems) in zip(range(0, len(paths), CHUNK), results):
            if problems is not None and not isinstance(problems, list):
                problems = [problems]
            for offset, message in problems or []:
                if skip is None:
                    raise ImageError(message, start + offset, paths[start + offset])
                skip.append((start + offset, message))
            yield start, result
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _unordered(work: Callable[[Any], Any], jobs: list[Any], workers: int) -> Iterable[tuple[Any, Any]]:
    """(job, work(job)) as each finishes, at most 2 × workers jobs in flight (a folder's worth of futures need not
    wait in memory); in this process when `workers` is 1. Leaving early cancels what has not started."""
    if workers <= 1 or len(jobs) <= 1:
        yield from ((job, work(job)) for job in jobs)
        return
    pool = _pool(min(workers, len(jobs)))
    queue, running = iter(jobs), {}
    try:
        for job in queue:
            running[pool.submit(work, job)] = job
            if len(running) >= 2 * workers:
                break
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                yield running.pop(future), future.result()
                job = next(queue, None)
                if job is not None:
                    running[pool.submit(work, job)] = job
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _pool(workers: int) -> Executor:
    # Forked workers start at once and import nothing; where fork is not offered (macOS, Windows) threads
    # still overlap the file reads, though the decoding then holds the GIL.
    if "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_die_with_parent)
    return ThreadPoolExecutor(workers)


def _die_with_parent() -> None:
    """A worker is killed when its parent dies, however it dies: a parent killed by the kernel (over a memory cap,
    kill -9) would otherwise leave its decoders running, orphaned, for minutes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the pool
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


@contextlib.contextmanager
def progress_bar(label: str, total: int, done: int = 0) -> Iterator[Callable[[int], None]]:
    """advance(n) of a progress bar on stderr (count, rate, time left) when stderr is a terminal; a no-op else."""
    if not sys.stderr.isatty() or total < SERIAL_BELOW:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total, completed=done, rate="")
        started, start_done = time.monotonic(), done

        def advance(n: int) -> None:
            nonlocal done
            done += n
            elapsed = max(time.monotonic() - started, 1e-6)
            bar.update(task, advance=n, rate=f"{(done - start_done) / elapsed:,.0f} images/s")

        yield advance


def _unreadable(path: Path, err: Exception) -> str:
    if isinstance(err, DataError):  # not a regular file (regular_file says what it is)
        return str(err).removesuffix(" Give a file.").rstrip(".")
    if isinstance(err, FileNotFoundError):
        return f"{path} does not exist"
    if isinstance(err, IsADirectoryError):
        return f"{path} is a directory, not an image file"
    return f"{path} could not be read as an image ({type(err).__name__}: {err})"


def _decode_into(job: tuple[str, int, list[Path], tuple[int, int, int], bool]) -> list[tuple[int, str]]:
    """Decodes one chunk into rows start.. of the .npy file, flushed before returning; the (offset, what is wrong)
    of each file it could not decode (its row left as it was)."""
    file, start, paths, (channels, height, width), resize = job
    out = np.load(file, mmap_mode="r+", allow_pickle=False)
    problems = []
    for i, path in enumerate(paths):
        try:
            image = _decode(path, channels, (height, width) if resize else None)
        except Exception as err:  # every decoder fails its own way on a truncated or foreign file
            problems.append((i, _unreadable(path, err)))
            continue
        if image.shape[1:] != (height, width):
            found = "×".join(map(str, image.shape[1:]))
            problems.append((i, f"{path} is {found} pixels, expected {height}×{width} (images are not resized)"))
            continue
        out[start + i] = image
    out.flush()
    del out
    return problems


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


def _probe_chunk(job: tuple[list[Path], bool]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """(rows, problems): without `go_on`, the rows before the first bad file and that file's problem; with it, every
    row (-1 for a bad file) and every problem."""
    paths, go_on = job
    rows = np.full((len(paths), 3), -1, dtype=np.int64)
    problems = []
    for i, path in enumerate(paths):
        try:
            rows[i] = _probe(path)
        except Exception as err:  # Pillow names what it could not identify in several ways
            problems.append((i, _unreadable(path, err)))
            if not go_on:
                return rows[:i], problems
    return rows, problems


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
