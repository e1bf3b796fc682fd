"""data=hf through the real CLI: train on a data set saved by datasets and report its test accuracy, check it, predict
a folder of new images with the model; and a Hub name on a machine without the Hub: one paragraph, in seconds."""

from __future__ import annotations

import csv
import json
import socket
import time

import pytest
from conftest import FAST, run_cli, run_dirs
from factories import folder_images, write_pngs
from PIL import Image

datasets = pytest.importorskip("datasets")
NAMES = ["cat", "dog", "frog"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """trainkit's and datasets' caches in the test's folder; no Hub (the suite runs without internet)."""
    values = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def save_pets(folder, sizes=(("train", 90), ("validation", 15), ("test", 30))):
    """A DatasetDict of 8×8 colour pictures whose class is a bright band's row, saved with save_to_disk."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    parts = {}
    for seed, (split, n) in enumerate(sizes):
        x, y = folder_images(n, (8, 8), colour=True, seed=seed)
        parts[split] = datasets.Dataset.from_dict({"image": [Image.fromarray(i) for i in x], "label": y.tolist()},
                                                  features=features)
    datasets.DatasetDict(parts).save_to_disk(folder)


def test_train_on_a_saved_dataset_then_check_it_and_predict(tmp_path, env, monkeypatch, capsys):
    """`trainkit train data=hf` learns the bands and reports test accuracy; `data check` and `predict` (in this
    process, by the CLI's own path: one torch start less) read the same data and a folder of new PNGs."""
    from trainkit.api import run

    save_pets(tmp_path / "pets")
    proc = run_cli("train", "data=hf", f"data.path={tmp_path / 'pets'}", "model=mlp", "trainer.max_epochs=2",
                   "data.batch_size=16", *FAST, cwd=tmp_path, env=env)
    assert "test/acc" in proc.stdout, proc.stdout
    (run_dir,) = run_dirs(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test"]["test/acc"] > 0.6, "far above the third of chance"
    monkeypatch.chdir(tmp_path)
    result = run("data check", ["data=hf", f"data.path={tmp_path / 'pets'}"])
    assert "3 classes; one sample is 3×8×8 uint8" in capsys.readouterr().out
    assert result["class_names"] == NAMES and [s["samples"] for s in result["splits"]] == [90, 15, 30]
    x, y = folder_images(6, (8, 8), colour=True, seed=9)
    write_pngs(tmp_path / "new", x, [f"{i}.png" for i in range(6)])
    run("predict", [f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", f"input={tmp_path / 'new'}",
                    f"output={tmp_path / 'p.csv'}"])
    rows = list(csv.DictReader((tmp_path / "p.csv").read_text().splitlines()))
    assert [r["filename"] for r in rows] == [f"{i}.png" for i in range(6)]
    assert sum(r["label"] == NAMES[c] for r, c in zip(rows, y)) >= 4, rows


def test_a_hub_name_offline_is_one_paragraph_at_once(tmp_path, env):
    started = time.monotonic()
    proc = run_cli("train", "data=hf", "data.path=nobody/no-such-set", cwd=tmp_path, check=False, env=env)
    assert proc.returncode != 0 and time.monotonic() - started < 60
    said = proc.stderr.strip()
    assert "data.path=nobody/no-such-set is no folder or file here" in said and "save_to_disk" in said, said
    assert "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache" in said and "unset HF_HUB_OFFLINE" in said
    assert "Traceback" not in said and said.count("\n") == 0, said
    assert run_dirs(tmp_path) == []


def test_a_hub_that_never_answers_is_given_up_on_within_its_timeout(tmp_path, env):
    """Without HF_HUB_OFFLINE, on a network that swallows requests (here: a server that accepts and never answers),
    one request with HF_HUB_ETAG_TIMEOUT decides, not datasets' retries (over a minute)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        hub = f"http://127.0.0.1:{server.getsockname()[1]}"
        started = time.monotonic()
        proc = run_cli("data", "check", "data=hf", "data.path=nobody/no-such-set", cwd=tmp_path, check=False,
                       env={**env, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub, "HF_HUB_ETAG_TIMEOUT": "2"})
    assert proc.returncode != 0 and time.monotonic() - started < 40
    said = proc.stdout + proc.stderr
    assert "the Hub cannot be reached" in said and "set HF_HUB_OFFLINE=1" in said, said
