"""`trainkit data check`: a summary of the data as training will see it, every problem, exit 1 when fatal."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import run_cli
from factories import MNIST_HEADER, write_cifar10, write_cifar_batch, write_mnist_csv
from omegaconf import OmegaConf
from rich.console import Console

from trainkit.cli.compose import config_dir
from trainkit.commands import Context
from trainkit.commands.data import CheckFailed, check


def run_check(compose, tmp_path, *overrides):
    console = Console(record=True, width=240)
    try:
        result = check(compose(*overrides, config="data_check"), Context(tmp_path, console=console, errors=console))
    finally:
        printed = console.export_text()
    return result, printed


def test_config_writes_nothing_and_composes_the_data_group(compose):
    cfg = compose(config="data_check")
    assert cfg.data.name == "synthetic_regression" and cfg.seed == 0 and set(cfg) == {"data", "seed", "preview", "plugins"}
    assert cfg.preview is None  # writes nothing unless asked
    raw = OmegaConf.load(config_dir() / "data_check.yaml")
    assert raw.hydra.output_subdir is None and raw.hydra.run.dir == "."
    assert {"override hydra/job_logging": "disabled"} in raw.defaults
    assert {"override hydra/hydra_logging": "disabled"} in raw.defaults


def test_regression_data_summary(compose, tmp_path):
    result, printed = run_check(compose, tmp_path, "data.n_train=64", "data.n_val=16", "data.n_test=8")
    assert [s["samples"] for s in result["splits"]] == [64, 16, 8] and result["fatal"] == []
    assert result["splits"][0]["class_counts"] is None and "samples per class" not in printed
    assert "train" in printed and "float32" in printed


def test_mnist_summary_counts_every_class(compose, tmp_path, mnist_files):
    result, printed = run_check(compose, tmp_path, "data=mnist_csv", f"data.train_csv={mnist_files['kaggle_train']}",
                                f"data.test_csv={mnist_files['kaggle_test']}")
    splits = {s["name"]: s for s in result["splits"]}
    assert (splits["train"]["samples"], splits["val"]["samples"], splits["test"]["samples"]) == (360, 40, 100)
    assert sum(splits["train"]["class_counts"]) == 360 and len(splits["test"]["class_counts"]) == 10
    assert splits["train"]["shape"] == [1, 28, 28] and splits["train"]["dtype"] == "uint8"
    assert 0 <= splits["train"]["min"] < splits["train"]["max"] <= 255
    assert "samples per class" in printed and "1×28×28" in printed
    assert result["fatal"] == []


def test_mnist_warnings_missing_class_leaks_and_normalization(compose, tmp_path):
    x, y = write_mnist_csv(tmp_path / "train.csv", n=200)
    lines = (tmp_path / "train.csv").read_text().splitlines()
    keep = [line for line in lines[1:] if not line.startswith("7,")]  # no class 7 at all
    (tmp_path / "train.csv").write_text("\n".join([lines[0], *keep]) + "\n")
    (tmp_path / "test.csv").write_text("\n".join([lines[0], *keep[:5]]) + "\n")  # copies of train rows
    result, printed = run_check(compose, tmp_path, "data=mnist_csv", f"data.train_csv={tmp_path / 'train.csv'}",
                                f"data.test_csv={tmp_path / 'test.csv'}",
                                "data.mean=[0.9]", "data.std=[0.1]")
    warnings = " ".join(result["warnings"])
    assert "train: no samples of class 7" in warnings and "test: no samples of class" in warnings
    assert re.search(r"test: [1-5] of 5 samples also appear in train \(exact copies\)", warnings)
    assert "configured normalization (data.mean=[0.9000] data.std=[0.1000]) is far" in warnings
    assert "warning:" in printed and result["fatal"] == []


def test_bad_rows_are_all_listed_and_fatal(compose, tmp_path):
    path = tmp_path / "train.csv"
    write_mnist_csv(path, n=30)
    lines = path.read_text().splitlines()
    lines[4] = lines[4] + ",0"
    lines[9] = lines[9].replace(",", ",abc,", 1)
    lines[20] = "12" + lines[20][1:]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CheckFailed) as err:
        run_check(compose, tmp_path, "data=mnist_csv", f"data.train_csv={path}")
    assert err.value.keeps_run_dir  # its run directory is the working directory
    assert "3 fatal problems" in str(err.value) and "line 5 has 785 pixel values" in str(err.value)


def test_bad_rows_printed(compose, tmp_path):
    path = tmp_path / "train.csv"
    write_mnist_csv(path, n=30, layout="headerless")
    lines = path.read_text().splitlines()
    lines[2], lines[7] = "5,1,2", lines[7].replace(",", ",,", 1)
    path.write_text("\n".join(lines) + "\n")
    console = Console(record=True, width=400)
    with pytest.raises(CheckFailed):
        check(compose("data=mnist_csv", f"data.train_csv={path}", config="data_check"), Context(tmp_path, console=console, errors=console))
    printed = console.export_text()
    assert "line 3 has 2 pixel values" in printed and "line 8 has 785 pixel values" in printed
    assert printed.count("fatal:") == 2


def test_config_errors_are_fatal_and_keep_the_directory(compose, tmp_path):
    with pytest.raises(CheckFailed, match="data.train_csv is required") as err:
        run_check(compose, tmp_path, "data=mnist_csv")
    assert err.value.keeps_run_dir


def test_cifar_every_bad_batch_is_listed(compose, tmp_path):
    folder = write_cifar10(tmp_path, n_per_batch=20, batches=("data_batch_1", "data_batch_2", "data_batch_3"))
    write_cifar_batch(folder / "data_batch_2", np.zeros((3, 1024), np.uint8), [0, 1, 2])
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:100])
    console = Console(record=True, width=400)
    with pytest.raises(CheckFailed, match="2 fatal problems"):
        check(compose("data=cifar10", f"data.root={tmp_path}", config="data_check"), Context(tmp_path, console=console, errors=console))
    printed = console.export_text()
    assert "data_batch_2 has data of uint8 3×1024" in printed and "test_batch is truncated or corrupt" in printed


def test_cli_fatal_problem_exits_1_and_leaves_the_working_directory_alone(tmp_path):
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "mine.txt").write_text("the user's file")
    bad = tmp_path / "bad.csv"
    bad.write_text(MNIST_HEADER + "\n" + "3," * 784 + "300\n")
    proc = run_cli("data", "check", "data=mnist_csv", f"data.train_csv={bad}", cwd=cwd, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error:" in proc.stderr and "line 2 column 785 (pixel783) is '300'" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in cwd.iterdir()) == ["mine.txt"]  # no outputs/, no log, nothing removed


def test_cli_prepare_is_a_plain_command(tmp_path, capsys):
    from factories import write_mnist_idx

    from trainkit.cli import main

    write_mnist_idx(tmp_path / "idx")
    assert main(["data", "prepare", "mnist-csv", "--source", str(tmp_path / "idx"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "train.csv").is_file() and "test_unlabeled.csv" in capsys.readouterr().out
