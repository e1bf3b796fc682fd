"""`trainkit predict` on a folder of thousands of images, through the real CLI: stopped part-way by SIGINT or SIGTERM,
or by an unreadable image in the middle, it leaves a valid partial CSV (the header and whole rows), says how many rows
it wrote and where in one paragraph, and exits 130, 143 or 1. The readers and the writer alone:
tests/unit/test_inputs_stream.py."""

from __future__ import annotations

import csv
import re
import signal
from pathlib import Path

import pytest
import torch
from conftest import fit, run_cli
from factories import mnist_images, write_mnist_csv, write_pngs
from test_hardening_cli import _signal_when

N = 2000  # enough images that a predict of one per batch runs on for a second or more after its first rows


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A tiny MNIST classifier's checkpoint, trained in this process, and a folder of N of its 28×28 images."""
    from hydra import compose, initialize_config_dir

    from trainkit.cli.compose import config_dir, register_schemas

    root = tmp_path_factory.mktemp("stream")
    write_mnist_csv(root / "train.csv", n=64, seed=0)
    write_mnist_csv(root / "test.csv", n=32, seed=1)
    register_schemas()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "model=cnn", "data=mnist_csv", f"data.train_csv={root / 'train.csv'}", f"data.test_csv={root / 'test.csv'}",
            "trainer.max_epochs=1", "trainer.progress=none", "trainer.tensorboard=false", "trainer.num_threads=1"])
    threads = torch.get_num_threads()
    (root / "run").mkdir()
    fit(cfg, root / "run")
    torch.set_num_threads(threads)  # the run set it for the whole process
    names = [f"{i // 1000}/{i:05d}.png" for i in range(N)]
    for part in range(N // 1000):
        write_pngs(root / "digits" / str(part), mnist_images(1000, seed=part)[0],
                   [n[2:] for n in names[part * 1000:(part + 1) * 1000]])
    return {"ckpt": root / "run" / "checkpoints" / "best.ckpt", "folder": root / "digits", "names": names}


def said(stderr: str, total: int) -> tuple[int, str]:
    """The rows and the file a stopped predict names in its paragraph."""
    found = re.search(rf"predict stopped part-way: it wrote ([\d,]+) of {total:,} rows to (.+) \(a valid partial CSV: "
                      rf"the header and whole rows only\)\.$", stderr.strip())
    assert found and stderr.strip().count("\n") == 0 and "Traceback" not in stderr, stderr
    return int(found[1].replace(",", "")), found[2]


def whole_rows(path: Path) -> list[list[str]]:
    """The CSV's rows after its header, each checked to be complete: a file name, a class and a confidence."""
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["filename", "label", "confidence"]
    assert path.read_bytes().endswith(b"\r\n")
    for row in rows:
        assert len(row) == 3 and row[1] in [str(k) for k in range(10)] and 0 < float(row[2]) <= 1, row
    return rows


@pytest.mark.parametrize("signum, code, cause", [(signal.SIGINT, 130, "stopped by Ctrl-C (SIGINT)."),
                                                 (signal.SIGTERM, 143, "stopped by SIGTERM.")])
def test_a_predict_stopped_by_a_signal_leaves_a_valid_partial_csv_and_says_so(digits, tmp_path, signum, code, cause):
    """In the run directory it made (the default output), which stays: the partial file is a result."""
    made = lambda: [p for p in (tmp_path / "outputs").glob("predict/*/*/predictions.csv")
                    if p.read_bytes().count(b"\n") > 20]
    proc, took = _signal_when(["predict", f"ckpt={digits['ckpt']}", f"input={digits['folder']}", "batch_size=1"],
                              tmp_path, made, signum)
    assert proc.returncode == code and took < 10, (took, proc.stderr)
    assert proc.stderr.startswith(f"stopped: {cause} predict stopped part-way"), proc.stderr
    rows, where = said(proc.stderr, N)
    (output,) = made()
    assert tmp_path / where == output
    written = whole_rows(output)
    assert 20 <= len(written) == rows < N
    assert [r[0] for r in written] == digits["names"][:rows]  # the first inputs, in order


def test_an_unreadable_image_in_the_middle_leaves_the_rows_before_it(digits, tmp_path):
    folder = tmp_path / "digits"
    names = digits["names"][:600]
    write_pngs(folder / "0", mnist_images(600, seed=0)[0], [n[2:] for n in names])
    (folder / names[300]).write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    proc = run_cli("predict", f"ckpt={digits['ckpt']}", f"input={folder}", "output=out/p.csv", cwd=tmp_path,
                   check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: predict: "), proc.stderr
    assert f"{names[300]} could not be read as an image" in proc.stderr and "leave it out" in proc.stderr
    rows, where = said(proc.stderr, 600)
    assert rows == 300 and where == "out/p.csv"
    assert [r[0] for r in whole_rows(tmp_path / where)] == names[:300]
