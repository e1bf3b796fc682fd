"""The sample store: filled in place and continued after an interruption, read bitwise as the in-memory path reads,
bad images skipped or refused as data.on_bad_image says, and nothing that reads a split copies it whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import write_image_folder

from trainkit.data import cache, image_folder, images
from trainkit.data.base import DataError, Split, carve
from trainkit.data.loader import Augment, BatchLoader


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def test_an_interrupted_fill_continues_where_it_stopped_and_is_never_read_half_made(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"12345")
    written: list[int] = []

    def fill(writer: cache.Writer, stop_after: int | None = None) -> dict[str, np.ndarray]:
        x = writer.create("x", (10, 3), np.int64)
        for chunk in range(5):
            if chunk in writer.done:
                continue
            if stop_after is not None and len(written) == stop_after:
                raise KeyboardInterrupt
            x[2 * chunk:2 * chunk + 2] = chunk + 1
            x.flush()
            written.append(chunk)
            writer.complete(chunk)
        return {"x": x, "y": np.arange(10)}

    with pytest.raises(KeyboardInterrupt):
        cache.cached(source, "t", fill=lambda w: fill(w, stop_after=2))
    assert not list((tmp_path / ".tkcache").glob("*.json"))  # no key: the half-made store is not a store
    arrays = cache.cached(source, "t", fill=fill)
    assert written == [0, 1, 2, 3, 4]  # chunks 0 and 1 were not written twice
    assert arrays["x"][:, 0].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5] and isinstance(arrays["x"], np.memmap)
    assert not list((tmp_path / ".tkcache").glob(".*.partial"))  # the partial folder is gone once the store is whole
    assert cache.cached(source, "t", fill=lambda w: pytest.fail("filled again"))["y"].tolist() == list(range(10))


def test_a_fill_for_another_key_starts_afresh(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"a")

    def fill(writer: cache.Writer, value: int) -> dict[str, np.ndarray]:
        assert writer.done == set()
        x = writer.create("x", (4,), np.int64)
        x[:2] = value
        writer.complete(0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.cached(source, "t", fill=lambda w: fill(w, 1))
    source.write_bytes(b"b")  # the source changed: what was done for the old one must not count
    with pytest.raises(KeyboardInterrupt):
        cache.cached(source, "t", fill=lambda w: fill(w, 2))


def test_without_a_cache_a_fill_goes_through_a_folder_that_is_removed(tmp_path, cache_home):
    def fill(writer: cache.Writer) -> dict[str, np.ndarray]:
        x = writer.create("x", (3, 2), np.uint8)
        x[:] = 7
        return {"x": x}

    arrays = cache.cached(tmp_path / "nothing", "t", fill=fill, enabled=False)
    assert arrays["x"].tolist() == [[7, 7]] * 3 and isinstance(arrays["x"], np.memmap)
    assert not any(p.is_file() for p in (cache_home / "trainkit" / "tmp").rglob("*"))


def test_a_large_gather_from_a_store_spills_to_an_unlinked_file_and_one_in_memory_stays_there(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "COPY_ROWS_BYTES", 64)
    x = torch.arange(400 * 6, dtype=torch.uint8).reshape(400, 6)
    np.save(tmp_path / "x.npy", x.numpy())
    stored = torch.from_numpy(np.load(tmp_path / "x.npy", mmap_mode="c"))
    assert cache.file_backed(stored) and not cache.file_backed(x)
    idx = torch.randperm(400, generator=torch.Generator().manual_seed(0))[:300].sort().values
    spilled = cache.take(stored, idx)
    assert torch.equal(spilled, x[idx]) and cache.file_backed(spilled)
    assert torch.equal(cache.take(x, idx), x[idx]) and not cache.file_backed(cache.take(x, idx))
    keep, held = carve(Split(stored, torch.arange(400)), 0.25, seed=3)
    assert torch.equal(keep.x, x[keep.y]) and torch.equal(held.x, x[held.y]) and cache.file_backed(keep.x)


def test_channel_statistics_per_chunk_equal_the_whole_histogram(monkeypatch):
    x = torch.randint(0, 256, (300, 3, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    whole = x.permute(1, 0, 2, 3).reshape(3, -1).double() / 255
    mean, std = images.channel_stats(x)
    assert mean == pytest.approx(whole.mean(1).tolist()) and std == pytest.approx(whole.std(1, unbiased=False).tolist())


def test_batches_from_the_store_are_bitwise_those_of_the_same_split_in_memory(tmp_path):
    write_image_folder(tmp_path / "f", per_class={"": 40}, colour=True)
    stored = image_folder.load(str(tmp_path / "f"), val_fraction=0.2, seed=1)
    in_memory = image_folder.load(str(tmp_path / "f"), val_fraction=0.2, seed=1, cache=False)
    assert stored.meta == in_memory.meta
    copied = Split(in_memory.train.x.clone(), in_memory.train.y.clone())  # anonymous memory, as before the store
    loaders = [BatchLoader(split, stored.meta, 16, torch.device("cpu"), shuffle=True, seed=5,
                           augment=Augment(crop_padding=2, hflip=True)) for split in (stored.train, copied)]
    for epoch in (1, 2):
        for loader in loaders:
            loader.set_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(*loaders, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def truncated_png(path) -> None:
    path.write_bytes(path.read_bytes()[:60])  # a valid header, then nothing: probes fine, fails to decode


@pytest.mark.parametrize("broken", ["header", "pixels"])
def test_an_unreadable_image_is_named_or_skipped_and_counted(tmp_path, broken):
    write_image_folder(tmp_path / "f", per_class={"": 10})
    bad = sorted((tmp_path / "f" / "dog").iterdir())[1]
    if broken == "header":
        bad.write_bytes(b"not a picture at all")
    else:
        truncated_png(bad)
    with pytest.raises(DataError, match=rf"{bad.name}.*data\.on_bad_image=skip"):
        image_folder.load(str(tmp_path / "f"))
    data = image_folder.load(str(tmp_path / "f"), on_bad_image="skip", val_fraction=0.25)
    assert len(data.train) + len(data.val) == 9
    assert data.warnings == [f"image_folder: skipped 1 unreadable image (data.on_bad_image=skip): {bad}"]
    with pytest.raises(DataError, match=rf"{bad.name}"):  # a store made while skipping still refuses under error
        image_folder.load(str(tmp_path / "f"))


def test_on_bad_image_takes_error_or_skip(tmp_path):
    write_image_folder(tmp_path / "f", per_class={"": 4})
    with pytest.raises(DataError, match=r"data\.on_bad_image='ignore' is not one of error, skip"):
        image_folder.load(str(tmp_path / "f"), on_bad_image="ignore")


def test_decoding_in_workers_writes_the_store_in_order_and_reports_every_bad_file(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "CHUNK", 8)
    monkeypatch.setattr(images, "SERIAL_BELOW", 16)
    written = write_image_folder(tmp_path / "f", per_class={"": 30}, colour=True)[""][0].transpose(0, 3, 1, 2)
    files = sorted(p for p in (tmp_path / "f").rglob("*.png"))
    order = image_folder._list_files(tmp_path / "f", ["cat", "dog", "frog"]).files
    assert sorted(order) == files
    truncated_png(order[3])
    truncated_png(order[20])
    out = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(30, 3, 12, 10))
    seen: dict[int, list[int]] = {}
    images.decode_into(tmp_path / "x.npy", order, (3, 12, 10), skip=True, workers=2,
                       completed=lambda chunk, problems: seen.update({chunk: [i for i, _ in problems]}))
    assert sorted(seen) == list(range(4)) and seen[0] == [3] and seen[2] == [20]
    good = [i for i in range(30) if i not in (3, 20)]
    assert np.array_equal(np.asarray(out)[good], written[good]) and not np.asarray(out)[[3, 20]].any()
    with pytest.raises(images.ImageError) as err:
        images.decode_into(tmp_path / "x.npy", order, (3, 12, 10), workers=2)
    assert err.value.index in (3, 20)


def test_the_docs_store_writer_example_runs_and_reads_back_from_the_store(tmp_path):
    """docs/extending.md's plugin that writes into the store, run as written."""
    import re

    from conftest import ROOT

    text = (ROOT / "docs" / "extending.md").read_text()
    section = text[text.index("### Data bigger than memory"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    module: dict = {}
    exec(compile(code, "extending.md", "exec"), module)
    pictures = np.random.default_rng(0).integers(0, 256, (1500, 3, 32, 32), dtype=np.uint8)
    for i, picture in enumerate(pictures):
        picture.tofile(tmp_path / f"{i}.raw")
    np.save(tmp_path / "labels.npy", np.arange(1500) % 4)
    data = module["load"](str(tmp_path))
    assert torch.equal(data.train.x, torch.from_numpy(pictures)) and data.meta.num_outputs == 4
    (tmp_path / "0.raw").unlink()  # the store is read back: no picture is decoded again
    assert torch.equal(module["load"](str(tmp_path)).train.x, torch.from_numpy(pictures))


def test_data_check_reports_the_images_a_reader_skipped(tmp_path):
    from trainkit.data.check import summarize

    write_image_folder(tmp_path / "f", per_class={"": 10})
    bad = sorted((tmp_path / "f" / "cat").iterdir())[0]
    bad.write_bytes(b"nothing")
    report = summarize(image_folder.load(str(tmp_path / "f"), on_bad_image="skip"))
    assert any("skipped 1 unreadable image" in w for w in report.warnings) and not report.fatal
