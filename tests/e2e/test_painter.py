"""The seeds' painter (experiment=painter_gan on data=curves): it learns to paint within a short run, and everything
else a GAN run has works on its checkpoint: eval's measures and pictures, sample, export, trainkit.load, and an
exact resume. The preset is trained once for the module, in this process, through the CLI's command table."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import fit, run_cli, untimed
from PIL import Image
from test_after_training import command

QUIET = ["trainer.progress=none", "trainer.tensorboard=false"]


def measures(ckpt: Path, n: int = 2000) -> dict:
    from trainkit.reports.gan import curve_measures
    from trainkit.restore import restore

    task = restore(ckpt).task
    return curve_measures(task.curves, task.generate(n, seed=5))


@pytest.fixture(scope="module")
def painter(tmp_path_factory):
    """The preset after one update (a generator that has learnt nothing yet) and after 2 of its 20 epochs."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("painter")
    command("train", "experiment=painter_gan", "trainer.max_epochs=1", "trainer.limit_train_batches=1", *QUIET,
            run_dir=root / "untrained")
    command("train", "experiment=painter_gan", "trainer.max_epochs=2", *QUIET, run_dir=root / "trained")
    yield {"root": root, "untrained": root / "untrained" / "checkpoints" / "last.ckpt",
           "ckpt": root / "trained" / "checkpoints" / "last.ckpt", "run": root / "trained"}
    torch.set_num_threads(threads)  # the preset's trainer.num_threads=1 holds for the whole process


def test_the_preset_learns_to_paint(painter):
    before, after = measures(painter["untrained"]), measures(painter["ckpt"])
    assert before["between"] < 0.1 and after["between"] > 0.6, "most paintings now lie between x² and 2x² + 1"
    assert before["ks_a"] > 0.9 and after["ks_a"] < 0.3, "their fitted a spreads over [1, 2]"
    assert after["residual"] < 0.5 * before["residual"], "they keep closer to the family"
    with (painter["run"] / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["val/between"]) > 0.6 and -1.45 < float(rows[-1]["val/d_score"]) < -1.3
    picture = Image.open(painter["run"] / "paintings" / "epoch_002.png")
    assert picture.size == (480, 384)


def test_eval_measures_and_draws_the_paintings(painter, tmp_path):
    result, out = command("eval", f"ckpt={painter['ckpt']}", "data.n_test=2000", "trainer.tensorboard=true",
                          "eval.samples=16", run_dir=tmp_path)
    m, report = result["metrics"], result["report"]
    assert m["test/between"] == report["generated_between"] > 0.6 and report["real_between"] == 1.0
    assert m["test/ks_a_real"] < m["test/ks_a"] < 0.3 and report["real_residual"] < 1e-6 < m["test/residual"]
    assert 0 <= m["test/d_acc"] <= 1 and -1.45 < m["test/d_score"] < -1.3
    assert report["generated"] == report["real"] == 2000
    assert Image.open(tmp_path / "paintings.png").size == (600, 480) and (tmp_path / "fitted_a.png").is_file()
    assert "between the bounds at every point" in out and "-log 4 = -1.386 when G has converged" in out
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["test/ks_a"] == m["test/ks_a"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"test/paintings", "test/fitted_a"} <= set(events.Tags()["images"])


def test_sample_draws_paintings_and_writes_them(painter, tmp_path):
    def sample(run: str, *args: str) -> dict:
        return command("sample", f"ckpt={painter['ckpt']}", "n=12", *args, run_dir=tmp_path / run)[0]

    first, again = sample("a"), sample("b")
    assert Path(first["output"]).read_bytes() == Path(again["output"]).read_bytes(), "seeded"
    assert Image.open(first["output"]).size == (600, 480)
    with open(first["points"], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][0] == "y(-1)" and rows[0][7] == "y(0)" and len(rows[0]) == 15 and len(rows) == 1 + 12


def test_export_and_load_draw_paintings(painter, tmp_path):
    import trainkit

    result, out = command("export", f"ckpt={painter['ckpt']}", "format=torchscript", run_dir=tmp_path)
    assert "matches trainkit" in out and "batch×15" in out
    model = trainkit.load(painter["ckpt"])
    z = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    paintings = model(z)
    assert model.input_shape == (5,) and paintings.shape == (7, 15)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
        assert torch.equal(torch.jit.load(result["file"])(z), paintings)
    drawn = model.sample(6, seed=2)
    assert drawn.image.size == (600, 480) and len(drawn.table[1]) == 6
    assert model.task.curves.between(model(torch.randn(500, 5))).float().mean() > 0.6


def test_resumes_exactly(compose, tmp_path):
    """Two epochs straight against one epoch and a resume: the same metrics rows and bitwise the same weights."""
    from trainkit.engine import checkpoint

    cfg = compose("experiment=painter_gan", "trainer.max_epochs=2", "data.n_train=3200", "data.n_val=256",
                  "data.n_test=256", *QUIET)
    threads = torch.get_num_threads()
    try:
        rows = fit(cfg, tmp_path / "straight").state.history
        fit(cfg, tmp_path / "halves", epochs=1)
        resumed = fit(cfg, tmp_path / "halves", resume=tmp_path / "halves" / "checkpoints" / "last.ckpt")
    finally:
        torch.set_num_threads(threads)
    assert [untimed(r) for r in resumed.state.history] == [untimed(r) for r in rows]
    a, b = (checkpoint.load(tmp_path / d / "checkpoints" / "last.ckpt") for d in ("straight", "halves"))
    for key in ("modules", "training_modules"):
        if key in a:
            assert all(torch.equal(a[key]["gan"][k], b[key]["gan"][k]) for k in a[key]["gan"]), f"{key} differ"


def test_a_bad_key_is_one_paragraph_and_leaves_nothing(tmp_path):
    proc = run_cli("train", "experiment=painter_gan", "data.a_low=2", "data.a_high=1", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and proc.stdout.count("error") == 0
    assert proc.stderr.startswith("error: curves: the range of a, data.a_low=2") and "reversed" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert list(tmp_path.glob("outputs/*/*")) == [], "the refused run's directory is removed"
