"""predict's inputs and output, streamed: readers of new inputs hold a chunk at a time (same checks, same line numbers
as when they read whole), an unreadable image yields the images before it, and the CSV writer never leaves a half
row. The same through the real CLI, with signals: tests/e2e/test_predict_stream.py."""

from __future__ import annotations

import csv
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import write_pngs

from trainkit.commands.predict import Rows
from trainkit.data import inputs as inputs_module
from trainkit.data.base import DataError, DataMeta
from trainkit.data.inputs import ImageInputs, ValueInputs


def values(features: int = 1) -> ValueInputs:
    return ValueInputs(DataMeta("x", "regression", (features,), 1), {})


def drained(read) -> tuple[list[int], torch.Tensor, list[list[str]]]:
    """(chunk sizes, every sample, every row's leading cells) of an Inputs."""
    sizes, xs, lead = [], [], []
    for x, cells in read.chunks:
        assert len(x) == len(cells)
        sizes.append(len(x))
        xs.append(x)
        lead += cells
    return sizes, torch.cat(xs) if xs else torch.zeros(0), lead


def test_a_csv_of_values_is_read_in_chunks_with_its_count_known_first(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs_module, "VALUE_CHUNK", 3)
    path = tmp_path / "x.csv"
    path.write_text("a, b\n1,2\n\n 3 ,4\n5,6\n,\n7,8\n9,10\n11,12.5\n13,14\n")  # blank lines (and ",") are skipped
    read = values(2).read(path)
    assert (read.format, read.count, read.header) == ("values", 7, ["a", "b"])
    sizes, x, lead = drained(read)
    assert sizes == [3, 3, 1]
    assert x.dtype == torch.float32 and x.shape == (7, 2)
    assert x[:, 0].tolist() == [1, 3, 5, 7, 9, 11, 13] and x[5, 1].item() == 12.5
    assert lead[:2] == [["1", "2"], ["3", "4"]] and lead[-1] == ["13", "14"]  # the cells, stripped, as written


def test_a_headerless_csv_of_values_starts_with_its_first_line(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs_module, "VALUE_CHUNK", 2)
    (tmp_path / "x.csv").write_text("0.5\n-1.5\n2\n")
    read = values().read(tmp_path / "x.csv")
    assert (read.count, read.header) == (3, ["x"])
    assert drained(read)[1].flatten().tolist() == [0.5, -1.5, 2.0]
    (tmp_path / "y.csv").write_text("1,2\n")
    assert values(2).read(tmp_path / "y.csv").header == ["x0", "x1"]
    (tmp_path / "only_header.csv").write_text("x\n")
    read = values().read(tmp_path / "only_header.csv")
    assert read.count == 0 and drained(read)[0] == []


@pytest.mark.parametrize("text, said", [
    ("x\n1\n\n2\noops\n3\n", r"x\.csv line 5 is 'oops'; expected 1 number per line\. Fix or remove that line\.$"),
    ("x\n1\nnan\n", r"line 3 is 'nan'"),  # not a finite number
    ("x\n1\n2,3\n", r"line 3 is '2,3'"),
    ("a,b\n1\n", r"x\.csv has a header of 2 names; the model takes 1 x value per line\.$"),
    ("\n \n", r"x\.csv is empty; expected x values, 1 per line\.$"),
])
def test_a_bad_csv_of_values_is_refused_before_any_chunk_with_its_line_number(tmp_path, monkeypatch, text, said):
    monkeypatch.setattr(inputs_module, "VALUE_CHUNK", 1)  # a bad line far past the first chunk is still said by read()
    (tmp_path / "x.csv").write_text(text)
    with pytest.raises(DataError, match=said):
        values().read(tmp_path / "x.csv")


def test_a_csv_of_values_changed_between_the_check_and_the_read_is_refused_at_its_line(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs_module, "VALUE_CHUNK", 2)
    path = tmp_path / "x.csv"
    path.write_text("x\n1\n2\n3\n")
    read = values().read(path)
    path.write_text("x\n1\n2\nthree\n")
    chunks = iter(read.chunks)
    assert len(next(chunks)[0]) == 2
    with pytest.raises(DataError, match="line 4 is 'three'"):
        next(chunks)


def test_reading_a_big_csv_of_values_holds_a_chunk_not_the_file(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("x\n" + "0.125\n-2.5\n" * 10_000)  # held whole, 20,000 values took 9 MB; a chunk takes 1.4 MB
    tracemalloc.start()
    try:
        read = values().read(path)
        n = sum(len(x) for x, _ in read.chunks)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == read.count == 20_000
    assert peak < 3_000_000, f"{peak:,} bytes at the peak"


def test_an_unreadable_image_yields_the_images_before_it_then_is_said_in_one_paragraph(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs_module, "DECODE_CHUNK", 4)
    images = np.arange(10 * 28 * 28, dtype=np.int64).reshape(10, 28, 28).astype(np.uint8)
    names = [f"{i:02d}.png" for i in range(10)]
    write_pngs(tmp_path / "in", images, names)
    (tmp_path / "in" / "06.png").write_text("not a picture\nacross lines\n")  # in the second chunk, not its first
    read = ImageInputs(DataMeta("d", "classification", (1, 28, 28), 10), {}).read(tmp_path / "in")
    assert read.count == 10
    chunks = iter(read.chunks)
    sizes, lead = [], []
    with pytest.raises(DataError) as err:
        for x, cells in chunks:
            sizes.append(len(x))
            lead += cells
    assert sizes == [4, 2] and lead == [[n] for n in names[:6]]
    assert "06.png could not be read as an image" in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("predict: ") and str(err.value).endswith("fix that file or leave it out.")


def test_image_chunks_hold_at_most_decode_bytes_of_pixels(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs_module, "DECODE_BYTES", 3 * 28 * 28)  # three images a chunk
    write_pngs(tmp_path, np.zeros((7, 28, 28), np.uint8), [f"{i}.png" for i in range(7)])
    read = ImageInputs(DataMeta("d", "classification", (1, 28, 28), 10), {}).read(tmp_path)
    assert drained(read)[0] == [3, 3, 1]


def test_the_output_holds_the_header_and_whole_rows_whatever_was_half_written(tmp_path):
    out = tmp_path / "p.csv"
    rows = Rows(out, ["filename", "label"])
    rows.add([["a.png", "7"], ["b,c.png", "1"]])  # a name with a comma is quoted
    assert out.read_bytes() == b'filename,label\r\na.png,7\r\n"b,c.png",1\r\n'  # written through, no buffer to flush
    rows.file.write(b"d.png,")  # a row cut off where a stop came
    assert rows.stop() == 2
    assert list(csv.reader(out.open(newline=""))) == [["filename", "label"], ["a.png", "7"], ["b,c.png", "1"]]


def test_the_output_keeps_undecodable_file_names_as_they_are_on_disk(tmp_path):
    name = b"caf\xe9.png".decode("utf-8", "surrogateescape")  # a Latin-1 name, as Python lists it
    rows = Rows(tmp_path / "p.csv", ["filename"])
    rows.add([[name]])
    rows.close()
    assert Path(tmp_path / "p.csv").read_bytes() == b"filename\r\ncaf\xe9.png\r\n"


def test_a_stop_part_way_is_one_paragraph_for_each_cause_with_its_exit_code(tmp_path, monkeypatch):
    import errno

    from trainkit.commands.predict import PredictStopped, _stopped
    from trainkit.errors import Stopped

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "p.csv"
    try:
        raise RuntimeError("a tensor\nof the wrong shape")
    except RuntimeError as exc:
        bug = exc
    cases = [
        (KeyboardInterrupt(), 130, r"^stopped by Ctrl-C \(SIGINT\)\. predict stopped"),
        (Stopped("stopped by SIGTERM."), 143, r"^stopped by SIGTERM\. predict stopped"),
        (DataError("predict: a.png could not be read as an image."), 1, r"^predict: a\.png could .* image\. predict"),
        (OSError(errno.ENOSPC, "No space left on device", str(out)), 1, r"^cannot use .*p\.csv: .*disk is full"),
        (bug, 1, (r"^trainkit predict failed on an unexpected RuntimeError: a tensor of the wrong shape \(at .*\)\. "
                  r"This is a bug in trainkit, please report it; its traceback is in predict\.log\. predict stopped")),
    ]
    for exc, code, message in cases:
        stopped = _stopped(exc, 1234, 100_000, out, tmp_path)
        assert isinstance(stopped, PredictStopped) and stopped.keeps_run_dir and stopped.exit_code == code
        assert isinstance(stopped, KeyboardInterrupt) == (code == 130)  # Ctrl-C stays one for Python callers
        assert re.search(message, str(stopped)) and "\n" not in str(stopped), str(stopped)
        assert str(stopped).endswith("it wrote 1,234 of 100,000 rows to p.csv (a valid partial CSV: the header and "
                                     "whole rows only).")
    assert "RuntimeError: a tensor" in (tmp_path / "predict.log").read_text()
