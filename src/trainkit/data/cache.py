"""The sample store: a dataset's decoded samples as memory-mapped .npy files, made once, read at page-cache speed.

Every reader ends here. A store is keyed by its source (size, mtime and a hash of sampled blocks, plus what the
reader adds: the decode settings, a listing of image files), so a changed source makes a new one. A reader either
hands over arrays it built in memory (`build`, for sources that are small next to memory: a CSV, CIFAR-10's
pickles) or fills the store's files in place, chunk by chunk, through a `Writer` (`fill`: a folder of images of
any size, decoded by worker processes straight into the file). A filled store that was interrupted continues where
it stopped; it is never read until it is whole (its key file is written last). What comes back is memory-mapped
copy-on-write: its pages live in the page cache, which the kernel reclaims, not in the process's own memory.

On disk, beside the source in `.tkcache/` (or in ~/.cache/trainkit when that folder is read-only):
    <source>.<tag>.json          the key and each array's shape: written last, so it only ever describes whole arrays
    <source>.<tag>.<array>.npy   one file per array (x, y, ...), numpy's .npy format: a header, then the raw rows
    .<source>.<tag>.partial/     while a store is being filled: its arrays, progress.json (chunks done), lock
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainkit.storage import cache_root

VERSION = 2  # bump when what a reader stores changes meaning (2: stores filled in place)
FOLDER = ".tkcache"  # beside the source
SAMPLE_BLOCK = 1 << 16  # bytes hashed per sampled block
SAMPLE_BLOCKS = 16  # first, last and evenly spread blocks: the whole of any file up to 1 MiB
COPY_ROWS_BYTES = 16 << 20  # bytes per step when copying rows between files: bounds the memory a copy takes

Arrays = dict[str, np.ndarray]


def fingerprint(file: Path) -> dict[str, Any]:
    """Size, mtime and a blake2b of 16 blocks of 64 KiB spread over the file (the whole of a small one).

    A full hash of a large CSV can cost more than the whole cached load; a sampled one is nearly free, and an
    edit changes the mtime anyway.
    """
    stat = file.stat()
    digest = hashlib.blake2b(digest_size=16)
    with open(file, "rb") as f:
        if stat.st_size <= SAMPLE_BLOCK * SAMPLE_BLOCKS:
            digest.update(f.read())
        else:
            last = stat.st_size - SAMPLE_BLOCK
            for k in range(SAMPLE_BLOCKS):
                f.seek(last * k // (SAMPLE_BLOCKS - 1))
                digest.update(f.read(SAMPLE_BLOCK))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sample_blake2b": digest.hexdigest()}


class Writer:
    """Fills one store's arrays in place. `create` gives a writable memory map of a .npy file (or, continuing an
    interrupted fill, the same file with what was written before); `path` names the file, for worker processes
    that open it themselves (np.load(path, mmap_mode="r+")); `done` and `complete` record which chunks are
    written, so a fill continues where it stopped. A chunk is complete only after its rows are flushed."""

    def __init__(self, folder: Path, key: dict[str, Any]) -> None:
        self.folder, self.key = folder, key
        progress = self._progress_path()
        try:
            said = json.loads(progress.read_text())
            self.done: set[int] = set(said["done"]) if said.get("key") == key else set()
        except (OSError, ValueError, KeyError, TypeError):
            self.done = set()
        if not self.done:  # a fresh fill: nothing half-written from another key may be taken for this one
            for stale in folder.glob("*.npy"):
                stale.unlink()

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.npy"

    def create(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.memmap:
        path, shape, dtype = self.path(name), tuple(int(s) for s in shape), np.dtype(dtype)
        if self.done and path.exists():
            with contextlib.suppress(OSError, ValueError):
                array = np.load(path, mmap_mode="r+", allow_pickle=False)
                if array.shape == shape and array.dtype == dtype:
                    return array
        self.done.clear()  # an array that is not there any more: whatever was marked done is not
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)  # sparse until written

    def complete(self, *chunks: int) -> None:
        """Marks chunks as written, atomically: a fill interrupted now continues after them."""
        self.done.update(chunks)
        temp = self.folder / f".progress.{uuid.uuid4().hex[:8]}"
        temp.write_text(json.dumps({"key": self.key, "done": sorted(self.done)}))
        os.replace(temp, self._progress_path())

    def _progress_path(self) -> Path:
        return self.folder / "progress.json"


def cached(
    source: Path,
    tag: str,  # what the arrays are, e.g. "kaggle": one source may be cached under several tags
    build: Callable[[], Arrays] | None = None,
    *,
    fill: Callable[[Writer], Arrays] | None = None,
    enabled: bool = True,
    extra: dict[str, Any] | None = None,  # more of the key, e.g. what an index file points at
) -> Arrays:
    """The store of `source` under `tag`, memory-mapped: read when its key still matches, else made, by `build()`
    (arrays in memory, saved) or by `fill(writer)` (arrays written in place; it returns the ones that make up the
    store, by name, as the writer's memory maps or small in-memory arrays), beside the source or in the user cache
    dir when that folder is read-only. `enabled=False` (data.cache=false): nothing is kept; a filled store still
    goes through a temporary folder that is removed once it is mapped, so memory stays flat."""
    if (build is None) == (fill is None):
        raise TypeError("cached() takes one of build and fill")
    if not enabled:
        return build() if fill is None else _temporary(fill)
    source = source.absolute()
    key = {"version": VERSION, "tag": tag, **fingerprint(source), **(extra or {})}
    key = json.loads(json.dumps(key))  # as it reads back: tuples become lists
    places = _places(source, tag)
    for place in places:
        arrays = _read(place, key)
        if arrays is not None:
            return arrays
    built = None
    for place in places:
        try:
            place.parent.mkdir(parents=True, exist_ok=True)
            with _locked(place):  # another process filling the same store: wait for it, then read its work
                arrays = _read(place, key)
                if arrays is None:
                    if fill is None:
                        built = build() if built is None else built
                    _make(place, key, None if fill is None else fill, built)
                    arrays = _read(place, key)
            if arrays is not None:
                return arrays
        except OSError:  # a read-only folder, a full disk, no permission: the next place
            _discard(place)
    if built is not None:
        return built
    return build() if fill is None else _temporary(fill)


def stored_split(arrays: Arrays, x: str = "x", y: str | None = "y") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, y) tensors over a store's arrays, sharing their memory maps (no copy)."""
    def as_tensor(a: Any) -> torch.Tensor:
        return torch.from_numpy(a) if isinstance(a, np.ndarray) else torch.as_tensor(a)

    return as_tensor(arrays[x]), None if y is None or y not in arrays else as_tensor(arrays[y])


def _places(source: Path, tag: str) -> list[Path]:
    """The key file's path, beside the source and in the user cache dir; arrays sit next to it."""
    name = f"{source.name}.{tag}"
    hashed = hashlib.blake2b(str(source.parent).encode(), digest_size=8).hexdigest()
    return [source.parent / FOLDER / name, cache_root() / hashed / name]


@contextlib.contextmanager
def _locked(place: Path) -> Iterator[None]:
    with open(place.parent / f".{place.name}.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read(place: Path, key: dict[str, Any]) -> Arrays | None:
    try:
        stored = json.loads(_key_path(place).read_text())
        if stored.get("key") != key:
            return None
        arrays = {}
        for name, shape in stored["arrays"].items():
            array = np.load(_array_path(place, name), mmap_mode="c", allow_pickle=False)
            if list(array.shape) != shape:
                return None
            arrays[name] = array
        return arrays
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # absent, truncated or foreign: rebuild
        return None


def _make(place: Path, key: dict[str, Any], fill: Callable[[Writer], Arrays] | None, built: Arrays | None) -> None:
    """The arrays (`built`, or what `fill` writes) into `.<name>.partial/`, then each renamed into place, then the
    key: a reader never sees a store that is not whole, and an interrupted fill leaves its partial folder to
    continue from."""
    partial = _partial(place)
    partial.mkdir(exist_ok=True)
    arrays = _save(partial, built) if fill is None else _finished(partial, fill(Writer(partial, key)))
    for name, file in arrays.items():
        os.replace(file, _array_path(place, name))
    temp = place.parent / f".{place.name}.{uuid.uuid4().hex[:8]}.json"
    shapes = {name: list(np.load(_array_path(place, name), mmap_mode="r").shape) for name in arrays}
    temp.write_text(json.dumps({"key": key, "arrays": shapes}, indent=1) + "\n")
    os.replace(temp, _key_path(place))
    shutil.rmtree(partial, ignore_errors=True)


def _partial(place: Path) -> Path:
    return place.parent / f".{place.name}.partial"


def _discard(place: Path) -> None:
    """What a failed attempt left in a place it could not finish: its partial folder and its lock."""
    shutil.rmtree(_partial(place), ignore_errors=True)
    with contextlib.suppress(OSError):
        (place.parent / f".{place.name}.lock").unlink()
        place.parent.rmdir()  # only if empty: a .tkcache folder made for nothing


def _save(folder: Path, arrays: Arrays) -> dict[str, Path]:
    files = {}
    for name, array in arrays.items():
        files[name] = folder / f"{name}.done.npy"
        np.save(files[name], np.ascontiguousarray(array), allow_pickle=False)
    return files


def _finished(folder: Path, arrays: Arrays) -> dict[str, Path]:
    """The files of a fill's arrays: its memory maps flushed where they are, small in-memory ones saved."""
    files = {}
    for name, array in arrays.items():
        if isinstance(array, np.memmap) and array.filename is not None:
            array.flush()
            files[name] = Path(array.filename)
        else:
            files.update(_save(folder, {name: array}))
    return files


def _temporary(fill: Callable[[Writer], Arrays]) -> Arrays:
    """A fill into a folder that is removed once its arrays are mapped: the mappings outlive the names, so the
    samples stay on disk (not in memory) until the process ends, and nothing is left behind."""
    folder = Path(tempfile.mkdtemp(prefix="store.", dir=_scratch()))
    try:
        files = _finished(folder, fill(Writer(folder, {"temporary": str(folder)})))
        return {name: np.load(file, mmap_mode="c", allow_pickle=False) for name, file in files.items()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _scratch() -> Path:
    """Where unlinked working files go (a temporary store, a carved split): the user cache dir, or the system's
    temporary folder where that cannot be made."""
    base = cache_root() / "tmp"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
        return Path(tempfile.gettempdir())
    return base


def take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t[idx] along the first dimension. A split in memory stays in memory; one gathered from a store (a split
    carved out of it) goes chunk by chunk into an unlinked file, memory-mapped, so carving a split of a store never
    needs its size in memory, and the carved split is read through the page cache as the store is."""
    if t.device.type != "cpu" or not len(idx) or not file_backed(t):
        return torch.index_select(t, 0, idx)
    row_bytes = max(1, t[:1].numel() * t.element_size())
    with tempfile.NamedTemporaryFile(dir=_scratch(), prefix="carved.", suffix=".npy") as f:  # unlinked when closed
        out = np.lib.format.open_memmap(f.name, mode="w+", dtype=t.numpy().dtype, shape=(len(idx), *t.shape[1:]))
        step = max(1, COPY_ROWS_BYTES // row_bytes)
        # One buffer for every step: a fresh one each time is kept by the allocator (glibc raises its mmap
        # threshold after the first is freed), and the process grows with the split after all.
        buffer = torch.empty((min(step, len(idx)), *t.shape[1:]), dtype=t.dtype)
        for start in range(0, len(idx), step):
            rows = idx[start:start + step]
            torch.index_select(t, 0, rows, out=buffer[:len(rows)])
            out[start:start + len(rows)] = buffer[:len(rows)].numpy()
        # No out.flush(): an msync would write the whole split to disk (tens of MB at every start of a run, and
        # seconds on a busy disk) for a file that no one else opens and that goes when the mapping does.
        return torch.from_numpy(out)


def file_backed(t: torch.Tensor) -> bool:
    """Whether a CPU tensor's memory is a mapped file (a store), from the process's own map of its memory (Linux);
    False where there is no such map."""
    address = t.data_ptr()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                start, end = (int(a, 16) for a in fields[0].split("-"))
                if start <= address < end:
                    return len(fields) == 6 and fields[5].strip().startswith("/")
    except OSError:
        pass
    return False


def _key_path(place: Path) -> Path:
    return place.parent / f"{place.name}.json"


def _array_path(place: Path, name: str) -> Path:
    return place.parent / f"{place.name}.{name}.npy"
