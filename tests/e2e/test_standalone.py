"""Checkpoints that stand alone, the Python API and the Trainer's callbacks.

Train on CSV files through `trainkit.train` (the CLI's own path, in this process), delete the files, and every
after-training command still works from the checkpoint alone (`trainkit.cli.run` is `trainkit NAME ARGS` in
this process); eval needs only the split it evaluates; a checkpoint of the first release still loads.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
import torch
from factories import mnist_images, write_mnist_csv
from PIL import Image

import trainkit
from trainkit.api import run
from trainkit.errors import UserError
from trainkit.trainer import Callback

QUIET = ["trainer.progress=none", "trainer.num_threads=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A CNN and a GAN trained on MNIST CSVs through the Python API; the CSVs are then moved away."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("standalone")
    cwd = Path.cwd()
    os.chdir(root)  # run directories go to ./outputs, as for a user
    try:
        write_mnist_csv(root / "train.csv", n=300, seed=0)
        write_mnist_csv(root / "test.csv", n=80, seed=1)
        write_mnist_csv(root / "unlabeled.csv", n=12, layout="kaggle_test", seed=2)
        data = ["data=mnist_csv", "data.train_csv=train.csv", "data.test_csv=test.csv", "data.batch_size=32"]
        steps = StepCounter()
        cnn = trainkit.train(["model=cnn", "trainer.max_epochs=2", *data, *QUIET], callbacks=[steps])
        gan = trainkit.train(["model=gan", "model.g_hidden=[32]", "model.d_hidden=[32]", "trainer.max_epochs=1",
                              "trainer.limit_train_batches=3", "trainer.tensorboard=false", *data, *QUIET])
        reg = trainkit.train(["trainer.max_epochs=1", "data.n_train=256", "data.n_val=64", "data.n_test=64", *QUIET])
        hidden = root / "elsewhere"
        hidden.mkdir()
        yield {"root": root, "cnn": cnn, "gan": gan, "reg": reg, "steps": steps, "hidden": hidden}
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)


class StepCounter(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.steps = 0

    def on_step_end(self, trainer, step, metrics):
        self.steps = step

    def on_epoch_end(self, trainer, epoch, metrics):
        self.events.append(f"epoch {epoch} {metrics['val/acc']:.4f}")

    def on_fit_end(self, trainer):
        self.events.append("fit end")


def best(summary: dict) -> str:
    return summary["checkpoints"]["best"]


def without(trained: dict, *names: str):
    """The named data files moved away for the duration of a `with` block."""
    class Moved:
        def __enter__(self):
            for name in names:
                shutil.move(trained["root"] / name, trained["hidden"] / name)

        def __exit__(self, *exc):
            for name in names:
                shutil.move(trained["hidden"] / name, trained["root"] / name)

    return Moved()


def test_train_returns_the_summary_and_callbacks_saw_the_run(trained):
    cnn, steps = trained["cnn"], trained["steps"]
    assert cnn["status"] == "finished" and Path(cnn["run_dir"]).is_dir() and "test/acc" in cnn["test"]
    assert steps.steps == cnn["steps"] > 0
    history = [f"epoch {r['epoch']} {r['val/acc']:.4f}" for r in [cnn["final"]]]
    assert steps.events[-2:] == [*history, "fit end"] and len(steps.events) == 3


def test_the_first_training_batch_is_a_picture_in_the_run_and_in_tensorboard(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(trained["cnn"]["run_dir"])
    grid = Image.open(run_dir / "inputs.png")
    assert grid.size == (724, 416)  # the batch of 32: 8 × 4 digits enlarged to 84 pixels, captioned with labels
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert "inputs" in events.Tags()["images"]
    assert not (Path(trained["reg"]["run_dir"]) / "inputs.png").exists()  # x values are no picture


def test_predict_export_and_sample_need_no_data_files(trained):
    with without(trained, "train.csv", "test.csv"):
        result = run("predict", [f"ckpt={best(trained['cnn'])}", "input=unlabeled.csv"])
        with open(result["output"], newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 12 and set(rows[0]) == {"ImageId", "Label"}
        for fmt in ("torchscript", "torch_export", "onnx"):
            exported = run("export", [f"ckpt={best(trained['cnn'])}", f"format={fmt}"])
            assert exported["max_abs_difference"] <= 1e-4 and exported["class_names"][3] == "3"
        exported = run("export", [f"ckpt={best(trained['gan'])}", "format=torch_export"])
        assert exported["input"]["name"] == "z" and exported["max_abs_difference"] <= 1e-3
        drawn = run("sample", [f"ckpt={best(trained['gan'])}", "n=9"])
        assert Image.open(drawn["output"]).size[0] > 3 * 84


def test_eval_needs_only_the_split_it_evaluates(trained):
    ckpt = best(trained["cnn"])
    gan = run("eval", [f"ckpt={best(trained['gan'])}", f"eval.feature_ckpt={ckpt}"])
    assert gan["metrics"]["test/fd_train"] >= 0  # with the training data: the real-vs-real floor too
    with without(trained, "train.csv"):
        result = run("eval", [f"ckpt={ckpt}"])
        assert result["samples"] == 80 and 0 <= result["metrics"]["test/acc"] <= 1
        gan = run("eval", [f"ckpt={best(trained['gan'])}", f"eval.feature_ckpt={ckpt}"])
        assert "test/fd" in gan["metrics"] and "test/fd_train" not in gan["metrics"]  # the floor needs train.csv
        with without(trained, "test.csv"), pytest.raises(UserError, match="data.test_csv"):
            run("eval", [f"ckpt={ckpt}"])


def test_load_gives_a_model_for_raw_inputs_without_the_data(trained):
    x, _ = mnist_images(5, seed=7)
    pixels = torch.from_numpy(x).unsqueeze(1)  # uint8 N×1×28×28, as stored
    with without(trained, "train.csv", "test.csv"):
        model = trainkit.load(best(trained["cnn"]))
        regression = trainkit.load(best(trained["reg"]))
        generator = trainkit.load(best(trained["gan"]))
    logits = model(pixels)
    assert logits.shape == (5, 10)
    assert torch.allclose(model(pixels.reshape(5, 784).float()), logits)  # a pixel-row CSV's rows, as floats
    names = model.predict(pixels)
    assert names == [str(k) for k in logits.argmax(1).tolist()]
    assert model.meta.in_shape == (1, 28, 28) and model.meta.num_outputs == 10
    values = regression.predict(torch.tensor([-1.0, 0.0, 2.5]))
    assert len(values) == 3 and all(isinstance(v, float) for v in values)
    assert regression(torch.tensor([[0.5]])).shape == (1, 1)
    assert generator(torch.randn(4, generator.input_shape[0])).shape == (4, 1, 28, 28)
    with pytest.raises(UserError, match="not a GAN|takes no inputs"):
        generator.predict(torch.randn(2, generator.input_shape[0]))
    with pytest.raises(UserError, match=r"shape \[5, 27\]"):
        model(torch.zeros(5, 27))


def test_a_first_release_checkpoint_loads_or_says_what_to_pass(trained, tmp_path):
    """Format 1 had no data section: the data description is read from the config's data, as 0.1 did."""
    payload = torch.load(best(trained["cnn"]), weights_only=True)
    del payload["data"]
    payload["format_version"] = 1
    old = tmp_path / "old.ckpt"
    torch.save(payload, old)
    os.chdir(trained["root"])  # the stored config names the CSVs relative to where training ran
    model = trainkit.load(old)
    assert model.meta.in_shape == (1, 28, 28)
    with without(trained, "train.csv"), pytest.raises(UserError, match=r"format 1.*data\.train_csv=PATH"):
        trainkit.load(old)


def test_api_errors_are_exceptions_and_leave_no_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="model.name='nope' is not a known model"):
        trainkit.train(["model.name=nope", *QUIET])
    with pytest.raises(UserError, match="Could not find 'model/nope'"):
        trainkit.train(["model=nope"])
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.ckpt"))
    assert [p for p in (tmp_path / "outputs").rglob("*") if p.is_dir() and len(p.parts) - len(tmp_path.parts) == 3] == []
