"""Sweeps: a failed job is a row and the others run on, the summary table and CSV, Optuna's objective and
direction, the joblib launcher's fair thread share, the missing-extra error, and TensorBoard's HPARAMS sessions."""

from __future__ import annotations

import csv
import json
import logging
import signal
from dataclasses import replace
from pathlib import Path

import joblib
import pytest
import yaml
from conftest import job_dir, run_cli

from trainkit import cli
from trainkit.cli.compose import config_dir
from trainkit.cli.table import load_target
from trainkit.errors import UserError

TINY = ["trainer.max_epochs=1", "data.n_train=256", "trainer.tensorboard=false", "trainer.progress=none"]


def read_summary(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "sweep_summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def fake_train(cfg, ctx) -> dict:
    """A stand-in for `train` (no torch): seed 1 crashes, seed 2 fails for a person, seed 5 is stopped by Ctrl-C,
    any other seed finishes with val/acc = seed / 10."""
    from trainkit.engine.signals import Interrupted

    run_dir = ctx.run_dir
    if cfg.seed == 1:
        raise RuntimeError("boom")
    if cfg.seed == 2:
        raise UserError("data.train_csv is required and has no value")
    if cfg.seed == 5:
        (run_dir / "summary.json").write_text(json.dumps({"status": "interrupted", "error": "stopped by SIGINT"}))
        raise Interrupted("stopped by SIGINT", signal.SIGINT)
    acc = cfg.seed / 10
    summary = {"status": "finished", "epochs": 1, "steps": 4, "monitor": "val/acc", "monitor_mode": "max",
               "best_epoch": 1, "best_value": acc, "final": {"epoch": 1, "step": 4, "val/acc": acc},
               "best": {"epoch": 1, "val/acc": acc}, "test": {"test/acc": acc - 0.01}, "wall_time_s": 0.5}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return summary


@pytest.fixture
def fake_sweep(tmp_path, monkeypatch):
    """`trainkit train -m ARGS` in this process, with `train` replaced by fake_train; returns (exit code, sweep dir)."""
    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setitem(cli.COMMANDS, "train", replace(cli.COMMANDS["train"], target="test_sweeps:fake_train"))
    monkeypatch.setattr("sys.argv", ["trainkit"])
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # Hydra points them at each job's train.log
    monkeypatch.setattr(root, "level", root.level)

    def sweep(*args: str) -> tuple[int, Path]:
        GlobalHydra.instance().clear()
        try:
            code = cli.main(["train", "-m", *args, "hydra.sweep.dir=sweep"])
        except SystemExit as exit:
            code = exit.code
        finally:
            GlobalHydra.instance().clear()
        return code, tmp_path / "sweep"

    return sweep


def test_failed_jobs_are_rows_the_others_run_on_and_the_sweep_exits_1(fake_sweep, capsys):
    code, sweep_dir = fake_sweep("seed=0,1,2,3")
    out, err = capsys.readouterr()
    assert code == 1
    rows = read_summary(sweep_dir)
    # Best first by val/acc (max), then the jobs that did not finish.
    assert [(r["job"], r["status"]) for r in rows] == [("3", "finished"), ("0", "finished"), ("1", "failed"),
                                                        ("2", "failed")]
    assert rows[0]["best_value"] == "0.3" and rows[0]["test/acc"] == "0.29" and rows[0]["seed"] == "3"
    assert rows[2]["error"] == "RuntimeError: boom"  # a bug: its type and message; the traceback went to the log
    assert rows[3]["error"] == "data.train_csv is required and has no value"
    for job in ("1", "2"):  # a failed job keeps its directory (overrides, summary.json with the error)
        assert json.loads((job_dir(sweep_dir, job) / "summary.json").read_text())["status"] == "failed"
    assert "Traceback" in (job_dir(sweep_dir, 1) / "train.log").read_text()
    assert "job 2 failed; the sweep goes on: data.train_csv is required" in err  # errors: standard error
    assert "sweep: 4 jobs, 2 finished, best first by val/acc (max)" in out
    assert "best: job 3 (seed=3), val/acc 0.3000 at epoch 1, ahead of job 0 by 0.3000" in out
    assert "job 1 failed: RuntimeError: boom" in out  # under the table, whole
    assert "2 of 4 jobs did not finish (job 1, 2)" in err


def test_a_signal_stops_the_sweep_after_summarising_the_jobs_so_far(fake_sweep):
    code, sweep_dir = fake_sweep("seed=3,5,4")
    assert code == 130
    rows = read_summary(sweep_dir)
    assert [(r["job"], r["status"]) for r in rows] == [("0", "finished"), ("1", "interrupted")]
    assert not list(sweep_dir.glob("2_*")) and not (sweep_dir / "2").exists(), "no job starts after Ctrl-C"


def test_a_search_in_which_every_trial_fails_still_summarises(fake_sweep, capsys):
    """No trial of the search finished: every job is still a row, and the search exits 1."""
    code, sweep_dir = fake_sweep("hparams_search=regression_optuna", "hydra.sweeper.n_trials=2", "seed=1")
    assert code == 1
    assert [(r["job"], r["status"], r["error"]) for r in read_summary(sweep_dir)] == [
        ("0", "failed", "RuntimeError: boom"), ("1", "failed", "RuntimeError: boom")]
    assert "2 of 2 jobs did not finish" in capsys.readouterr().err


def test_real_sweep_with_a_failing_job_then_runs_lists_and_compares_them(tmp_path):
    proc = run_cli("train", "-m", "model=mlp,cnn", *TINY, cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    rows = read_summary(sweep_dir)
    assert [(r["job"], r["model"], r["status"]) for r in rows] == [("0", "mlp", "finished"), ("1", "cnn", "failed")]
    summary = json.loads((job_dir(sweep_dir, 0) / "summary.json").read_text())
    assert float(rows[0]["best_value"]) == summary["best_value"] and rows[0]["monitor"] == "val/loss"
    assert float(rows[0]["final:val/loss"]) == summary["final"]["val/loss"]
    assert "does not fit data=synthetic_regression" in rows[1]["error"]
    assert "Traceback" not in proc.stdout + proc.stderr

    out = run_cli("runs", cwd=tmp_path).stdout
    assert "failed" in out and "finished" in out and f"{summary['best_value']:.4f} @1" in out
    out = run_cli("runs", "--compare", str(job_dir(sweep_dir, 0)), str(job_dir(sweep_dir, 1)), cwd=tmp_path).stdout
    assert "model.name" in out and "mlp" in out and "cnn" in out and "does not fit" in out


def test_optuna_search_optimises_what_train_returns_in_the_preset_direction(tmp_path):
    proc = run_cli("train", "-m", "hparams_search=regression_optuna", "hydra.sweeper.n_trials=2", *TINY, cwd=tmp_path)
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    values = [json.loads((job_dir(sweep_dir, j) / "summary.json").read_text())["best_value"] for j in ("0", "1")]
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(min(values))  # val/loss: minimised
    rows = read_summary(sweep_dir)
    assert [float(r["best_value"]) for r in rows] == sorted(values)
    assert {"optimizer", "optimizer.lr", "data.batch_size"} <= set(rows[0])
    assert "setup plugin" not in proc.stdout, "alembic's import chatter is silenced"


def _hydra_cfg(*overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(("preset", "data", "task"), [
    ("mnist_optuna", "mnist_csv", "trainkit.tasks.classification:ClassificationTask"),
    ("regression_optuna", "synthetic_regression", "trainkit.tasks.regression:RegressionTask"),
])
def test_search_presets_follow_the_monitored_metric(preset, data, task):
    cfg = _hydra_cfg(f"hparams_search={preset}")
    task_cls = load_target(task)
    assert cfg.data.name == data
    assert cfg.hydra.sweeper.direction == ("maximize" if task_cls.monitor_mode == "max" else "minimize")
    assert {"optimizer", "optimizer.lr", "data.batch_size"} <= set(cfg.hydra.sweeper.params)


@pytest.mark.parametrize("arg", ["hparams_search=mnist_optuna", "hydra/launcher=joblib"])
def test_a_missing_plugin_names_the_extra_to_install(arg, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    def missing(name, *args):
        return None if name.startswith("hydra_plugins.") or name == "optuna" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    assert cli.main(["train", "-m", arg]) == 1
    out = capsys.readouterr().err
    assert f"error: {arg} needs " in out and "pip install 'trainkit[sweep]'" in out


def test_hparams_session_sits_beside_the_runs_curves(tmp_path):
    """What TensorBoard's HPARAMS tab reads: a session start (params, named by the overrides) and end, and the
    metrics as scalars, all in the run's own tensorboard/ directory."""
    from omegaconf import OmegaConf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    from trainkit.logging.trackers import TrackerRun
    from trainkit.logging.trackers.tensorboard import TensorBoardTracker
    from trainkit.rundirs.resume import flatten

    run_dir = tmp_path / "run"
    cfg = OmegaConf.create({"model": {"name": "cnn", "hidden": [120, 84]}, "optimizer": {"lr": 0.01},
                            "trainer": {"tensorboard": True, "num_threads": None}, "resume": None})
    summary = {"monitor": "val/acc", "best_value": 0.9, "steps": 40, "test": {"test/acc": 0.88}}
    run = TrackerRun(run_dir, flatten(OmegaConf.to_container(cfg)), ["model=cnn", "optimizer.lr=0.01"])
    TensorBoardTracker(run).finish(summary, [])

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.group_name == "model=cnn optimizer.lr=0.01"
    assert start.hparams["model.name"].string_value == "cnn"
    assert start.hparams["optimizer.lr"].number_value == 0.01
    assert start.hparams["trainer.tensorboard"].bool_value is True
    assert start.hparams["model.hidden"].string_value == "[120, 84]"
    assert "trainer.num_threads" not in start.hparams and "resume" not in start.hparams
    assert metadata.SESSION_END_INFO_TAG in content
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("best/val/acc")] == [(40, 0.9)]
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("test/acc")] == [(40, 0.88)]


@pytest.mark.slow
def test_joblib_runs_jobs_side_by_side_each_on_a_fair_share_of_threads(tmp_path):
    run_cli("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=0.01,0.001", *TINY,
            cwd=tmp_path)
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert [r["status"] for r in read_summary(sweep_dir)] == ["finished", "finished"]
    share = max(1, joblib.cpu_count() // 2)
    for job in ("0", "1"):
        assert f"torch threads: {share} (" in (job_dir(sweep_dir, job) / "train.log").read_text()


def test_sweep_curves_show_every_job_and_compare_plots_two(tmp_path):
    from PIL import Image

    from trainkit.rundirs import curves
    from trainkit.rundirs.read import read_run
    from trainkit.rundirs.sweeps import job_dirs

    proc = run_cli("train", "-m", "optimizer=sgd,adam,rmsprop", "trainer.max_epochs=3", "data.n_train=256",
                   "trainer.tensorboard=false", "trainer.progress=none", cwd=tmp_path)
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    picture = sweep_dir / "sweep_curves.png"
    assert f"curves: {picture.relative_to(tmp_path)}" in proc.stdout or f"curves: {picture}" in proc.stdout
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.width >= 800
    drawn = curves.lines([read_run(p) for p in job_dirs(sweep_dir)])
    assert list(drawn) == ["optimizer=sgd", "optimizer=adam", "optimizer=rmsprop"]  # labelled by their overrides
    for series in drawn.values():
        assert list(series) == ["train/loss", "val/loss"]
        assert [xs for xs, _ in series.values()] == [[1.0, 2.0, 3.0]] * 2

    plot = tmp_path / "ab.png"
    out = run_cli("runs", "--compare", str(job_dir(sweep_dir, 0)), str(job_dir(sweep_dir, 1)), "--plot", str(plot),
                  cwd=tmp_path).stdout
    assert "curves:" in out and plot.is_file()
    proc = run_cli("runs", "--plot", str(plot), cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "--plot PATH draws the runs of --compare A B" in proc.stderr


def test_fail_fast_stops_the_sweep_at_the_first_failed_job(fake_sweep, capsys):
    code, sweep_dir = fake_sweep("seed=3,1,4", "sweep.fail_fast=true")
    out = capsys.readouterr().err
    assert code == 1
    assert [(r["job"], r["status"]) for r in read_summary(sweep_dir)] == [("0", "finished"), ("1", "failed")]
    assert not list(sweep_dir.glob("2_*")), "no job starts after the first failure"
    assert "job 1 failed and sweep.fail_fast=true: the sweep stops here" in out
    assert (sweep_dir / "sweep_summary.csv").is_file()


def test_a_failed_data_parallel_job_is_a_row_and_the_sweep_goes_on(tmp_path):
    """trainer.devices=2 (DDP, gloo on the CPU): job 0's processes diverge and fail, job 1 runs, and the sweep
    summarises both; the failed job's row has the processes' own error."""
    proc = run_cli("train", "-m", "trainer.devices=2", "optimizer=sgd", "optimizer.lr=1e6,0.01", "data.batch_size=16",
                   "trainer.max_restarts=0", "trainer.num_threads=1", *TINY, cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    rows = {r["job"]: r for r in read_summary(sweep_dir)}
    said = f"{[(r['status'], r['error']) for r in rows.values()]}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (rows["0"]["status"], rows["1"]["status"]) == ("failed", "finished"), said
    assert rows["0"]["error"].startswith("training diverged") and rows["1"]["optimizer.lr"] == "0.01"
    assert "job 0 failed; the sweep goes on: training diverged" in proc.stderr
