"""Every mistake a user can type gets one clean paragraph before anything is written; nothing trains on garbage.

Each case runs the real CLI (`trainkit.cli.main`, in this process: the same argument handling, Hydra
composition and commands as the installed `trainkit`) and checks the outcome a user sees: the exit code, a
message that names the key or file and the fix, no traceback, no run directory left behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from factories import MNIST_HEADER, mnist_images, write_mnist_csv

import trainkit
from trainkit.cli import main
from trainkit.errors import UserError
from trainkit.trainer import Callback

QUIET = ["trainer.progress=none", "trainer.tensorboard=false", "trainer.num_threads=1"]


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_mnist_csv(tmp_path / "train.csv", n=200, seed=0)
    write_mnist_csv(tmp_path / "test.csv", n=50, seed=1)
    return tmp_path


def cli(capsys, *args: str) -> tuple[int, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out + out.err


def run_dirs(root: Path) -> list[Path]:
    """Run directories (outputs/<date>/<time>, outputs/<command>/<date>/<time>) with anything in them."""
    outputs = root / "outputs"
    return [p for p in outputs.rglob("*") if p.is_dir() and re.fullmatch(r"\d\d-\d\d-\d\d(_\d+)?", p.name)
            and any(p.iterdir())] if outputs.exists() else []


def refused(capsys, root: Path, *args: str, code: int = 1) -> str:
    got, out = cli(capsys, *args)
    assert got == code, out
    assert "Traceback" not in out and "error:" in out, out
    assert run_dirs(root) == [], f"left behind: {run_dirs(root)}"
    return out


MNIST = ["data=mnist_csv", "data.train_csv=train.csv"]


@pytest.mark.parametrize("args, names", [
    (["trainer.grad_clip=-1"], "trainer.grad_clip=-1"),  # gradient ascent, silently, before
    (["trainer.grad_clip=0"], "trainer.grad_clip=0"),  # frozen training, silently, before
    (["model.hidden=[0]"], "model.hidden=[0]"),  # a zero-width layer: constant output
    (["data.batch_size=2.5"], "data.batch_size=2.5"),  # silently 2, with 2.5 in the stored config
    (["data.batch_size=0"], "data.batch_size=0"),
    (["data.batch_size=-5"], "data.batch_size=-5"),
    (["optimizer.lr=nan"], "optimizer.lr=nan"),
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1"),
    (["optimizer=sgd", "optimizer.momentum=-1"], "optimizer.momentum=-1"),
    (["seed=abc"], "seed='abc'"),
    (["seed=1.5"], "seed=1.5"),
    (["seed=null"], "seed=null"),
    (["resume=auto", "data.batch_size=-5"], "data.batch_size=-5"),
    (["trainer.limit_train_batches=0"], "trainer.limit_train_batches=0"),  # trained one batch, before
    (["trainer.max_epochs=abc"], "trainer.max_epochs"),
    (["model=cnn", *MNIST, "model.channels=[1000000]"], "model=cnn"),  # tried to allocate 94 GB, before
])
def test_bad_values_are_refused_before_anything_is_written(here, capsys, args, names):
    out = refused(capsys, here, "train", *args, *QUIET)
    assert names in out


@pytest.mark.parametrize("args, says", [
    (["foo=1"], "Could not override 'foo'"),
    (["optimizer=lbfgs"], "Available options in 'optimizer'"),
    (["data.train_csv=my", "file.csv"], "quote the whole override, e.g. 'data.train_csv=my file.csv'"),
])
def test_lines_hydra_cannot_read_are_usage_errors_without_a_run_directory(here, capsys, args, says):
    assert says in refused(capsys, here, "train", *args, code=2)
    assert not (here / "outputs").exists(), "not even an empty folder"


@pytest.mark.parametrize("command, args, names", [
    ("eval", [], "ckpt is required"), ("export", [], "ckpt is required"), ("predict", [], "ckpt, input are required"),
    ("predict", ["ckpt=x.ckpt"], "input is required"),
])
def test_a_missing_required_key_says_what_to_pass(here, capsys, command, args, names):
    out = refused(capsys, here, command, *args, code=2)
    assert names in out and f"trainkit {command} " in out


@pytest.mark.parametrize("content, says", [
    ("floats", "look scaled to 0..1"),
    ("twelve", "write it as a whole number (12), not 12.0"),
    ("semicolons", "separates its values with semicolons"),
    ("tabs", "separates its values with tabs"),
    ("png", "is a PNG image, not a CSV file"),
    ("label_last", "one class only"),
])
def test_a_bad_csv_gets_a_message_that_says_what_it_is(here, capsys, content, says):
    path = here / "bad.csv"
    x, y = mnist_images(20, seed=3)
    rows = x.reshape(20, 784)
    if content == "floats":
        path.write_text(MNIST_HEADER + "\n" + "\n".join(f"{k}," + ",".join(f"{v / 255:.3f}" for v in r)
                                                       for k, r in zip(y, rows)) + "\n")
    elif content == "twelve":
        path.write_text(MNIST_HEADER + "\n" + "\n".join(f"{k}," + ",".join(f"{v}.0" for v in r)
                                                       for k, r in zip(y, rows)) + "\n")
    elif content in ("semicolons", "tabs"):
        sep = ";" if content == "semicolons" else "\t"
        path.write_text("\n".join(sep.join(map(str, [k, *r])) for k, r in zip(y, rows)) + "\n")
    elif content == "png":
        from PIL import Image

        Image.fromarray(x[0]).save(here / "digit.png")
        path.write_bytes((here / "digit.png").read_bytes())
    else:  # the label last, and pixel0 of MNIST is always 0: every row read as class 0
        rows[:, 0] = 0
        path.write_text("\n".join(",".join(map(str, [*r, k])) for k, r in zip(y, rows)) + "\n")
    out = refused(capsys, here, "train", "data=mnist_csv", "data.train_csv=bad.csv", *QUIET)
    assert says in out
    assert "bad.csv" in out or "label column" in out


def test_classes_missing_from_training_are_an_error_unless_meant(here, capsys):
    x, y = mnist_images(200, seed=4)
    keep = y != 3
    (here / "no3.csv").write_text(MNIST_HEADER + "\n" + "\n".join(
        ",".join(map(str, [k, *r])) for k, r in zip(y[keep], x[keep].reshape(-1, 784))) + "\n")
    args = ["train", "data=mnist_csv", "data.train_csv=no3.csv", "data.test_csv=test.csv", "trainer.max_epochs=1",
            *QUIET]
    out = refused(capsys, here, *args)
    assert "has classes the training split has no sample of: 3 (" in out and "data.allow_missing_classes=true" in out
    code, out = cli(capsys, *args, "data.allow_missing_classes=true")
    assert code == 0 and "warning: the test split has classes" in out


def test_a_test_split_copied_from_training_is_a_warning_in_the_output_and_summary(here, capsys):
    code, out = cli(capsys, "train", *MNIST, "data.test_csv=train.csv", "trainer.max_epochs=1", *QUIET)
    assert code == 0 and "warning: test: 180 of 200 samples also appear in train" in out
    (run,) = run_dirs(here)
    assert any("also appear in train" in w for w in json.loads((run / "summary.json").read_text())["warnings"])


@pytest.fixture
def trained(here):
    return trainkit.train([*MNIST, "data.test_csv=test.csv", "model=mlp", "model.hidden=[16]", "trainer.max_epochs=1",
                           *QUIET])


def test_eval_of_a_file_that_is_no_checkpoint_never_advises_unsafe_loading(here, capsys, trained):
    out = refused(capsys, here / "outputs" / "eval", "eval", "ckpt=train.csv")
    assert "train.csv is not a checkpoint: it is a text file" in out and "weights_only" not in out


def test_eval_takes_a_run_directory_as_resume_does(here, capsys, trained):
    code, out = cli(capsys, "eval", f"ckpt={trained['run_dir']}", *QUIET)
    assert code == 0 and "metrics written to" in out


def test_eval_on_other_data_blames_only_what_the_user_gave(here, capsys, trained):
    out = refused(capsys, here / "outputs" / "eval", "eval", f"ckpt={trained['checkpoints']['best']}", "+data=cifar10",
                  "data.root=nowhere")
    assert "is not a setting" not in out and "cifar10" in out and "nowhere" in out


def test_an_interrupted_run_says_how_to_resume_it(here):
    class CtrlC(Callback):
        def on_step_end(self, trainer, step, metrics):
            if step == 2:
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would: the run finishes the step and saves

    with pytest.raises(UserError, match=r"Continue it with: trainkit train resume=outputs/"):
        trainkit.train([*MNIST, "trainer.max_epochs=1", *QUIET], callbacks=[CtrlC()])
    assert np.any([p.name == "last.ckpt" for p in (here / "outputs").rglob("*.ckpt")])
