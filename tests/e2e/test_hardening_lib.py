"""The library's half of the hardening issue, through the real command line: plugin code and data are checked, not
trusted; errors that are not trainkit's become one paragraph; nothing hangs (a FIFO, a tracking server that refuses
connections, a stop signal during the build); silent nonsense is refused or warned of; the Python API answers in
trainkit's errors with hints that are valid Python; messages speak of the task at hand.

Each failure is `error: ...` on standard error, exit code 1, no traceback, and no run directory left behind."""

from __future__ import annotations

import ast
import os
import re
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from conftest import TRAINKIT, run_cli

QUICK = ["trainer.max_epochs=1", "data.n_train=64", "data.n_val=32", "data.n_test=32", "trainer.progress=plain"]


def refused(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """The one paragraph a refused line printed, checked: exit 1, on stderr, no traceback."""
    said = " ".join(proc.stderr.split())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert said.startswith("error: ") and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in said, said
    return said


def no_run_left(cwd: Path) -> None:
    left = [p for p in (cwd / "outputs").rglob("*") if p.is_file()] if (cwd / "outputs").exists() else []
    assert left == [], left


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A small trained regression run: a checkpoint for predict, export and sample."""
    where = tmp_path_factory.mktemp("trained")
    run_cli("train", *QUICK, "hydra.run.dir=run", cwd=where)
    return where


def test_values_torch_checks_only_when_stepping_are_refused_before_the_run_directory(tmp_path):
    said = refused(run_cli("train", *QUICK, "scheduler=step", "scheduler.step_size=0", cwd=tmp_path, check=False),
                   "scheduler.step_size=0")
    assert "above 0" in said
    refused(run_cli("train", *QUICK, "scheduler=StepLR", "scheduler.step_size=0", cwd=tmp_path, check=False),
            "scheduler=StepLR", "ZeroDivisionError")
    no_run_left(tmp_path)


def test_a_task_on_data_of_another_kind_is_refused(tmp_path):
    refused(run_cli("train", *QUICK, "task=classification", cwd=tmp_path, check=False),
            "task=classification learns one class index per sample", "data=synthetic_regression", "task=auto")
    no_run_left(tmp_path)


def test_logger_keys_are_checked_and_an_empty_logger_list_trains_without_trackers(tmp_path):
    refused(run_cli("train", *QUICK, "logger=mlflow", "logger.mlflow.timeout_s=soon", cwd=tmp_path, check=False),
            "logger.mlflow.timeout_s=soon is not a number")
    no_run_left(tmp_path)
    run_cli("train", *QUICK, "logger=[]", "hydra.run.dir=run", cwd=tmp_path)
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file() and not (tmp_path / "run" / "tensorboard").exists()


def test_an_image_folder_with_a_dangling_link_or_a_fifo_is_refused_not_a_traceback_or_a_hang(tmp_path):
    import numpy as np
    from PIL import Image

    for name in ("cat", "dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "pets" / name / f"{i}.png")
    link = tmp_path / "pets" / "cat" / "gone.png"
    link.symlink_to(tmp_path / "nowhere.png")
    args = ["data=image_folder", "data.root=pets", "model=mlp", "data.cache=false", *QUICK[:1]]
    refused(run_cli("train", *args, cwd=tmp_path, check=False, timeout=60),
            f"{link.relative_to(tmp_path)} is a symbolic link to", "which does not exist")
    link.unlink()
    os.mkfifo(tmp_path / "pets" / "dog" / "pipe.png")
    refused(run_cli("train", *args, cwd=tmp_path, check=False, timeout=60), "pipe.png is a FIFO (named pipe)")
    no_run_left(tmp_path)


def test_predict_never_blocks_on_a_fifo_nor_writes_over_its_input(trained, tmp_path):
    ckpt = f"ckpt={trained / 'run'}"
    os.mkfifo(tmp_path / "x.csv")
    refused(run_cli("predict", ckpt, "input=x.csv", cwd=tmp_path, check=False, timeout=60),
            "predict: input: x.csv is a FIFO (named pipe)")
    (tmp_path / "y.csv").write_text("0.5\n1.0\n")
    refused(run_cli("predict", ckpt, "input=y.csv", "output=y.csv", cwd=tmp_path, check=False),
            "output=y.csv is the input file itself")
    assert (tmp_path / "y.csv").read_text() == "0.5\n1.0\n"
    refused(run_cli("predict", ckpt, "input=y.csv", "batch_size=lots", cwd=tmp_path, check=False),
            "batch_size=lots must be a whole number of at least 1")
    no_run_left(tmp_path)


def test_export_and_sample_never_write_over_the_checkpoint_and_check_their_numbers(trained, tmp_path):
    best = trained / "run" / "checkpoints" / "best.ckpt"
    before = best.read_bytes()
    refused(run_cli("export", f"ckpt={trained / 'run'}", f"output={best}", cwd=tmp_path, check=False),
            f"output={best} is the checkpoint it reads")
    assert best.read_bytes() == before
    for value in ("0", "-3", "wide"):
        refused(run_cli("sample", f"ckpt={best}", f"nrow={value}", cwd=tmp_path, check=False),
                f"nrow={value} must be a whole number of at least 1")
    refused(run_cli("sample", f"ckpt={best}", "n=abc", cwd=tmp_path, check=False), "n=abc must be a whole number")
    no_run_left(tmp_path)


def test_a_loaded_model_refuses_nan_inputs_rather_than_answering(trained):
    import trainkit
    from trainkit.errors import UserError

    model = trainkit.load(trained / "run", device="cpu")
    assert len(model.predict([[0.5], [1.0]])) == 2
    with pytest.raises(UserError, match="NaN or inf"):
        model.predict([[0.5], [float("nan")]])
    with pytest.raises(UserError, match="not the str"):
        model.predict("0.5")


PLUGIN = '''
import math

import torch
from torch import nn

import trainkit
from trainkit.data.base import DataMeta, DataSplits, Split


@trainkit.register_dataset("NAME_points")
def points(splits, n: int = 64, pixels: bool = False):
    """Two classes of 2-D points; with `pixels`, uint8 4×4 images whose DataMeta forgets scale=255.0."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    if pixels:
        x = (torch.rand(n, 1, 4, 4, generator=g) * 255).to(torch.uint8)
        meta = DataMeta(name="NAME_points", kind="classification", in_shape=(1, 4, 4), num_outputs=2)
    else:
        x = torch.randn(n, 2, generator=g) + y[:, None]
        meta = DataMeta(name="NAME_points", kind="classification", in_shape=(2,), num_outputs=2)
    return DataSplits(Split(x, y), Split(x[: n // 2], y[: n // 2]), None, meta)


@trainkit.register_model("NAME_net")
class Net(nn.Module):
    def __init__(self, in_shape, num_outputs, width: int = 8):
        super().__init__()
        assert width % 2 == 0, "width must be even"
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width), nn.Linear(width, num_outputs))

    def forward(self, x):
        return self.body(x)
'''


def write_plugin(where: Path, name: str, extra: str = "") -> None:
    (where / f"{name}.py").write_text(PLUGIN.replace("NAME", name) + textwrap.dedent(extra))


def test_a_plugin_that_exits_or_is_interrupted_at_import_is_an_error_naming_it(tmp_path):
    (tmp_path / "quits.py").write_text("import sys\n\nsys.exit(0)\n")
    (tmp_path / "stops.py").write_text("raise KeyboardInterrupt\n")
    said = refused(run_cli("train", "plugins=[quits]", *QUICK, cwd=tmp_path, check=False),
                   "the plugin module quits (plugins) exited while it was imported", "quits.py:3: sys.exit(0)")
    assert "must not end the process" in said
    refused(run_cli("train", "plugins=[stops]", *QUICK, cwd=tmp_path, check=False),
            "the plugin module stops (plugins) was interrupted while it was imported", "stops.py:1")
    no_run_left(tmp_path)


def test_a_plugin_dataset_without_yaml_takes_the_keys_every_dataset_has_and_warns_of_unscaled_pixels(tmp_path):
    write_plugin(tmp_path, "pts")
    run = run_cli("train", "plugins=[pts]", "data=pts_points", "model=pts_net", "data.batch_size=16",
                  "data.on_device=false", "data.allow_missing_classes=false", "data.pixels=true",
                  "trainer.max_epochs=1", "trainer.progress=plain", "hydra.run.dir=run", cwd=tmp_path)
    said = " ".join(run.stderr.split())
    assert "holds uint8 samples (pixels 0..255?) and its DataMeta says scale=1.0" in said, run.stderr
    assert "DataMeta(..., scale=255.0)" in said
    assert "pts_points, 64 train / 32 val samples" in run.stdout


def test_a_plugin_model_that_fails_is_named_with_its_line_before_the_run_directory_exists(tmp_path):
    write_plugin(tmp_path, "odd")
    said = refused(run_cli("train", "plugins=[odd]", "data=odd_points", "model=odd_net", "model.width=3",
                           "trainer.max_epochs=1", cwd=tmp_path, check=False),
                   "model=odd_net (the model registered by the plugin odd at", "odd.py:",
                   "AssertionError: width must be even")
    assert re.search(r"odd\.py:\d+: AssertionError", said), said
    assert not (tmp_path / "outputs").exists(), "the run directory was made before the plugin was checked"


def test_a_shape_error_speaks_of_the_task_at_hand_not_of_classes(tmp_path):
    write_plugin(tmp_path, "tags", '''
        from trainkit.tasks.base import SingleNetTask


        @trainkit.register_task("tags_task")
        class Tagging(SingleNetTask):
            monitor, monitor_mode = "val/loss", "min"

            @staticmethod
            def io_shapes(meta):
                return tuple(meta.in_shape), (3,)
        ''')
    said = refused(run_cli("train", "plugins=[tags]", "data=tags_points", "model=tags_net", "task=tags_task",
                           "trainer.max_epochs=1", cwd=tmp_path, check=False),
                   "gives outputs of shape ['batch', 2]", "the task needs ['batch', 3] (task=tags_task")
    assert "classes" not in said, said


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_tracking_server_that_refuses_connections_fails_in_seconds(tmp_path):
    pytest.importorskip("mlflow")
    start = time.monotonic()
    proc = run_cli("train", *QUICK, "logger=mlflow", f"logger.mlflow.tracking_uri=http://127.0.0.1:{free_port()}",
                   "logger.mlflow.timeout_s=2", "logger.mlflow.retries=1", cwd=tmp_path, check=False, timeout=120)
    refused(proc, "logger=mlflow: the tracking server at http://127.0.0.1:", "logger.mlflow.timeout_s=2")
    assert time.monotonic() - start < 60, "MLflow's own retries (minutes) were not bounded"
    no_run_left(tmp_path)


def test_a_stop_signal_while_the_run_is_built_stops_it_at_once(tmp_path):
    (tmp_path / "slow.py").write_text(textwrap.dedent('''
        import time
        from pathlib import Path

        import trainkit


        @trainkit.register_tracker("slow")
        class Slow:
            def __init__(self, run):
                Path("connecting").write_text("")
                time.sleep(120)  # a server that never answers
        '''))
    proc = subprocess.Popen([*TRAINKIT, "train", "plugins=[slow]", "logger=slow", *QUICK], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "connecting").exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, out + err
    assert "stopped: stopped by SIGTERM before training began" in " ".join(err.split()), err
    no_run_left(tmp_path)


def test_the_python_api_hint_for_a_missing_plugin_is_valid_python(tmp_path):
    import trainkit
    from trainkit.errors import ConfigError

    write_plugin(tmp_path, "hinted")
    run_cli("train", "plugins=[hinted]", "data=hinted_points", "model=hinted_net", "trainer.max_epochs=1",
            "trainer.progress=plain", "hydra.run.dir=run", cwd=tmp_path)
    with pytest.raises(ConfigError) as caught:
        trainkit.load(tmp_path / "run")
    said = str(caught.value)
    call = re.search(r"trainkit\.load\(\.\.\., plugins=(\[[^\]]*\])\)", said)
    assert call is not None, said
    assert ast.literal_eval(call.group(1)) == ["hinted"], said
    with pytest.raises(ConfigError, match=r'takes a list of strings, e.g. \["my_project.nets"\]'):
        trainkit.load(tmp_path / "run", plugins="hinted")
