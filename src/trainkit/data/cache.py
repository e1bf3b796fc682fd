"""Parsed data kept as memory-mappable .npy files beside its source, so a second load skips the parse.

The key is the source's size, mtime and a hash of sampled blocks; what to store and how to parse is the caller's.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

VERSION = 1  # bump when what a reader stores changes meaning
FOLDER = ".tkcache"  # beside the source
SAMPLE_BLOCK = 1 << 16  # bytes hashed per sampled block
SAMPLE_BLOCKS = 16  # first, last and evenly spread blocks: the whole of any file up to 1 MiB


def user_cache_dir() -> Path:
    """Where caches go when the source's folder is read-only: $XDG_CACHE_HOME/trainkit or ~/.cache/trainkit."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trainkit"


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


def cached(
    source: Path,
    tag: str,  # what the arrays are, e.g. "kaggle": one source may be cached under several tags
    build: Callable[[], dict[str, np.ndarray]],
    *,
    enabled: bool = True,
    extra: dict[str, Any] | None = None,  # more of the key, e.g. what an index file points at
) -> dict[str, np.ndarray]:
    """The arrays `build()` makes from `source`, from the cache when its key still matches, else built and
    stored (beside the source, or in the user cache dir when that folder is read-only; if neither can be
    written, just built). Cached arrays are memory-mapped copy-on-write: writable, read from disk lazily."""
    if not enabled:
        return build()
    source = source.absolute()
    key = {"version": VERSION, "tag": tag, **fingerprint(source), **(extra or {})}
    key = json.loads(json.dumps(key))  # as it reads back: tuples become lists
    places = _places(source, tag)
    for place in places:
        arrays = _read(place, key)
        if arrays is not None:
            return arrays
    arrays = build()
    for place in places:
        if _write(place, key, arrays):
            break
    return arrays


def _places(source: Path, tag: str) -> list[Path]:
    """The key file's path, beside the source and in the user cache dir; arrays sit next to it."""
    name = f"{source.name}.{tag}"
    hashed = hashlib.blake2b(str(source.parent).encode(), digest_size=8).hexdigest()
    return [source.parent / FOLDER / name, user_cache_dir() / hashed / name]


def _read(place: Path, key: dict[str, Any]) -> dict[str, np.ndarray] | None:
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


def _write(place: Path, key: dict[str, Any], arrays: dict[str, np.ndarray]) -> bool:
    """Each file is written under a temporary name and renamed, so a reader never sees half of one;
    the key is written last, so it never describes arrays that are not all there."""
    token = uuid.uuid4().hex[:8]
    temps: list[Path] = []
    try:
        place.parent.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            temp = place.parent / f".{place.name}.{name}.{token}.npy"
            temps.append(temp)
            np.save(temp, np.ascontiguousarray(array), allow_pickle=False)
            os.replace(temp, _array_path(place, name))
        meta = {"key": key, "arrays": {name: list(array.shape) for name, array in arrays.items()}}
        temp = place.parent / f".{place.name}.{token}.json"
        temps.append(temp)
        temp.write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(temp, _key_path(place))
        return True
    except OSError:  # read-only folder, full disk, no permission: the caller tries the next place
        for temp in temps:
            temp.unlink(missing_ok=True)
        return False


def _key_path(place: Path) -> Path:
    return place.parent / f"{place.name}.json"


def _array_path(place: Path, name: str) -> Path:
    return place.parent / f"{place.name}.{name}.npy"
