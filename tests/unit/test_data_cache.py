"""The parse cache: .npy files beside the source, keyed by size, mtime and sampled content; and the parse engines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from factories import write_mnist_csv

from trainkit.data import cache, mnist_csv
from trainkit.data.base import DataError


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch) -> Path:
    """The user cache dir inside the test's folder: a test never writes to the real ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "trainkit"


def counting_build(value: int = 7):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.full((3, 4), value, np.uint8), "y": np.arange(3, dtype=np.uint8)}

    return build, calls


def test_second_load_comes_from_memory_mapped_files_beside_the_source(tmp_path):
    source = tmp_path / "data.csv"
    source.write_text("anything\n")
    build, calls = counting_build()
    first = cache.cached(source, "t", build)
    second = cache.cached(source, "t", build)
    assert len(calls) == 1 and isinstance(first["x"], np.memmap) and isinstance(second["x"], np.memmap)
    assert np.array_equal(first["x"], second["x"]) and np.array_equal(first["y"], second["y"])
    second["x"][0, 0] = 0  # copy-on-write: writable in memory, the file stays as it was
    assert cache.cached(source, "t", build)["x"][0, 0] == 7
    assert sorted(p.name for p in (tmp_path / ".tkcache").iterdir()) == [  # the lock stays: others may wait on it
        ".data.csv.t.lock", "data.csv.t.json", "data.csv.t.x.npy", "data.csv.t.y.npy"]


@pytest.mark.parametrize("change", ["content", "same size and mtime", "size", "tag", "extra"])
def test_a_changed_source_or_key_rebuilds(tmp_path, change):
    source = tmp_path / "data.csv"
    source.write_text("1,2,3\n")
    build, calls = counting_build()
    cache.cached(source, "t", build, extra={"k": [1, 2]})
    tag, extra = "t", {"k": [1, 2]}
    if change == "content":
        source.write_text("1,2,4\n")
    elif change == "same size and mtime":  # only the content hash can tell
        stat = source.stat()
        source.write_text("9,2,3\n")
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    elif change == "size":
        source.write_text("1,2,3\n4,5,6\n")
    elif change == "tag":
        tag = "u"
    else:
        extra = {"k": [1, 3]}
    cache.cached(source, tag, build, extra=extra)
    assert len(calls) == 2
    cache.cached(source, tag, build, extra=extra)
    assert len(calls) == 2  # and then it is cached again


def test_sampled_hash_sees_both_ends_of_a_large_file(tmp_path):
    source = tmp_path / "big.bin"
    data = bytearray(os.urandom(3 << 20))
    source.write_bytes(data)
    before = cache.fingerprint(source)
    for position in (0, len(data) - 1):
        changed = bytearray(data)
        changed[position] ^= 1
        source.write_bytes(changed)
        os.utime(source, ns=(before["mtime_ns"], before["mtime_ns"]))
        assert cache.fingerprint(source)["sample_blake2b"] != before["sample_blake2b"]


def test_read_only_source_folder_falls_back_to_the_user_cache(tmp_path, monkeypatch, user_cache):
    source = tmp_path / "ro" / "data.csv"
    source.parent.mkdir()
    source.write_text("x\n")
    real_save = np.save

    def save(path, *args, **kwargs):  # root ignores permission bits, so refuse by hand
        if source.parent / ".tkcache" in Path(path).parents:
            raise PermissionError(13, "Read-only file system", str(path))
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(cache.np, "save", save)
    build, calls = counting_build()
    cache.cached(source, "t", build)
    cache.cached(source, "t", build)
    assert len(calls) == 1 and not list((source.parent / ".tkcache").glob("*"))
    assert len(list(user_cache.glob("*/data.csv.t.x.npy"))) == 1


def test_nowhere_writable_still_loads(tmp_path, monkeypatch):
    source = tmp_path / "data.csv"
    source.write_text("x\n")
    monkeypatch.setattr(cache.np, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    build, calls = counting_build()
    assert cache.cached(source, "t", build)["x"].shape == (3, 4)
    assert cache.cached(source, "t", build)["x"].shape == (3, 4) and len(calls) == 2


@pytest.mark.parametrize("damage", ["truncated array", "garbled key", "missing array"])
def test_damaged_cache_is_rebuilt(tmp_path, damage):
    source = tmp_path / "data.csv"
    source.write_text("x\n")
    build, calls = counting_build()
    cache.cached(source, "t", build)
    folder = tmp_path / ".tkcache"
    if damage == "truncated array":
        (folder / "data.csv.t.x.npy").write_bytes((folder / "data.csv.t.x.npy").read_bytes()[:-5])
    elif damage == "garbled key":
        (folder / "data.csv.t.json").write_text("{not json")
    else:
        (folder / "data.csv.t.y.npy").unlink()
    assert np.array_equal(cache.cached(source, "t", build)["x"], np.full((3, 4), 7)) and len(calls) == 2


def test_disabled_cache_builds_and_writes_nothing(tmp_path, user_cache):
    source = tmp_path / "data.csv"
    source.write_text("x\n")
    build, calls = counting_build()
    cache.cached(source, "t", build, enabled=False)
    cache.cached(source, "t", build, enabled=False)
    assert len(calls) == 2 and not (tmp_path / ".tkcache").exists() and not user_cache.exists()


# --- mnist_csv through the cache, and its two parse engines ------------------------------------------


def test_mnist_cached_load_skips_the_parse_and_gives_the_same_split(tmp_path, monkeypatch):
    path = tmp_path / "train.csv"
    x, y = write_mnist_csv(path, n=30)
    fresh = mnist_csv.read_split(str(path))

    def no_parse(*args):
        raise AssertionError("parsed again although nothing changed")

    monkeypatch.setattr(mnist_csv, "_parse", no_parse)
    again = mnist_csv.read_split(str(path))
    assert np.array_equal(again.x[:, 0].numpy(), x) and np.array_equal(again.y.numpy(), y)
    assert again.y.dtype == fresh.y.dtype and again.x.dtype == fresh.x.dtype
    data = mnist_csv.load(str(path), val_fraction=0.2)  # carving a memory-mapped split
    assert len(data.train) == 24


def test_mnist_cache_false_parses_every_time(tmp_path):
    write_mnist_csv(tmp_path / "train.csv", n=20)
    mnist_csv.load(str(tmp_path / "train.csv"), cache=False)
    assert not (tmp_path / ".tkcache").exists()


def test_mnist_edited_file_is_parsed_again_and_its_error_found(tmp_path):
    path = tmp_path / "train.csv"
    write_mnist_csv(path, n=20)
    mnist_csv.load(str(path))
    path.write_text(path.read_text().replace("\n", "\n1,2\n", 4).replace("\n1,2\n", "\n", 3))
    with pytest.raises(DataError, match="line 5 has 1 pixel values"):
        mnist_csv.load(str(path))


@pytest.mark.parametrize("layout", ["kaggle", "kaggle_test", "headerless"])
def test_both_engines_read_the_same(tmp_path, monkeypatch, layout):
    path = tmp_path / "data.csv"
    x, y = write_mnist_csv(path, n=25, layout=layout)
    fmt = {"kaggle": mnist_csv.KAGGLE, "kaggle_test": mnist_csv.KAGGLE_TEST, "headerless": mnist_csv.HEADERLESS}[layout]
    fast = mnist_csv._parse_polars(path, fmt)
    slow = mnist_csv._parse_numpy(path, fmt)
    for a, b in zip(fast, slow):
        assert (a is None and b is None) or (np.array_equal(a, b) and a.dtype == b.dtype == np.uint8)
    assert np.array_equal(fast[0].reshape(-1, 28, 28), x)


def test_without_polars_the_numpy_engine_reads(tmp_path, monkeypatch):
    path = tmp_path / "train.csv"
    x, y = write_mnist_csv(path, n=20)
    monkeypatch.setitem(sys.modules, "polars", None)  # `import polars` now raises ImportError
    split = mnist_csv.read_split(str(path), cache=False)
    assert np.array_equal(split.x[:, 0].numpy(), x) and np.array_equal(split.y.numpy(), y)
    path.write_text(path.read_text().replace("\n", "\n7,1\n", 3).replace("\n7,1\n", "\n", 2))
    with pytest.raises(DataError, match="line 4 has 1 pixel values"):
        mnist_csv.read_split(str(path), cache=False)
