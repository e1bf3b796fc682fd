"""Training from the sample store through the CLI: a run that decodes the store, one that reads it and one that keeps
none end with bitwise-equal weights; a skipped image is said on the console and counted in summary.json."""

from __future__ import annotations

import json

import torch
from conftest import FAST, run_cli, run_dirs
from factories import write_image_folder

TRAIN = ["data=image_folder", "data.size=[16,16]", "model=cnn", "trainer.max_epochs=2", "data.batch_size=16", "+data.augment.hflip=true",
         "+data.augment.crop_padding=2", "trainer.device=cpu", *FAST]


def test_decoding_reading_and_keeping_no_store_train_bitwise_alike(tmp_path, monkeypatch):
    from trainkit.api import run

    write_image_folder(tmp_path / "pets", colour=True, per_class={"train": 48, "test": 12})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    weights = []
    for n, cache in enumerate(("true", "true", "false")):  # decodes the store, reads it, keeps none
        out = tmp_path / f"run{n}"
        monkeypatch.chdir(tmp_path)
        run("train", [*TRAIN, f"data.root={tmp_path / 'pets'}", f"data.cache={cache}", f"hydra.run.dir={out}"])
        payload = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        weights.append(payload["modules"])
    assert list((tmp_path / "xdg" / "trainkit").rglob("*.decoded-3x16x16-bilinear.x.npy"))
    for other in weights[1:]:
        for name, state in weights[0].items():
            assert all(torch.equal(state[k], other[name][k]) for k in state), name


def test_a_skipped_image_is_said_and_counted_in_the_summary(tmp_path):
    write_image_folder(tmp_path / "pets", colour=True, per_class={"train": 30, "test": 6})
    bad = sorted((tmp_path / "pets" / "train" / "cat").iterdir())[0]
    bad.write_bytes(b"GIF89a not really")
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    failed = run_cli("train", *TRAIN, f"data.root={tmp_path / 'pets'}", cwd=tmp_path, check=False, env=env)
    assert failed.returncode == 1 and "data.on_bad_image=skip" in failed.stderr and bad.name in failed.stderr
    assert "Traceback" not in failed.stderr
    done = run_cli("train", *TRAIN, f"data.root={tmp_path / 'pets'}", "data.on_bad_image=skip", "trainer.max_epochs=1",
                   cwd=tmp_path, env=env)
    assert "skipped 1 unreadable image" in done.stdout + done.stderr
    (run_dir,) = run_dirs(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert any("skipped 1 unreadable image" in w and str(bad) in w for w in summary["warnings"]), summary["warnings"]
