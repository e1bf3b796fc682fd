"""`trainkit runs`: every status a run directory can be in, newest first, and two runs side by side. The run
directories are written here the way `trainkit train` writes them (test_sweeps.py reads real ones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainkit.rundirs.claim import lock
from trainkit.commands.runs import main
from trainkit.rundirs.read import find_runs

HOUR = 3600.0


def make_run(path: Path, *, age_h: float, overrides: list[str] = (), summary: dict | None = None,
             lock_file: bool = True, job: str = "train", lr: float = 0.001, epochs_done: int = 0) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(f"optimizer:\n  name: adam\n  lr: {lr}\ntrainer:\n  max_epochs: 3\n")
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides) or "[]\n")
    (path / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    name: {job}\n")
    if lock_file:
        (path / ".lock").write_text("12345")
    if epochs_done:
        rows = "".join(f"{e},{e * 10},{1 / e}\n" for e in range(1, epochs_done + 1))
        (path / "metrics.csv").write_text("epoch,step,val/loss\n" + rows)
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    then = time.time() - age_h * HOUR
    os.utime(path / ".hydra" / "config.yaml", (then, then))
    return path


def finished(value: float, lr: float) -> dict:
    return {"status": "finished", "epochs": 3, "steps": 30, "monitor": "val/acc", "monitor_mode": "max",
            "best_epoch": 2, "best_value": value, "best": {"epoch": 2, "val/acc": value},
            "final": {"epoch": 3, "step": 30, "train/loss": 0.5 - lr, "val/acc": value},
            "test": {"test/acc": value - 0.01}, "wall_time_s": 12.5}


@pytest.fixture
def outputs(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "250")
    out = tmp_path / "outputs"
    make_run(out / "2026-01-01" / "10-00-00", age_h=9, overrides=["optimizer.lr=0.01"], lr=0.01,
             summary=finished(0.91, 0.01))
    make_run(out / "2026-01-01" / "11-00-00", age_h=8,
             summary={"status": "failed", "epochs": 1, "error": "training diverged at step 7"})
    make_run(out / "2026-01-01" / "12-00-00", age_h=7,
             summary={"status": "interrupted", "epochs": 2, "error": "stopped by SIGTERM"})
    make_run(out / "2026-01-01" / "13-00-00", age_h=6, epochs_done=2)  # died: no summary, .lock not held
    make_run(out / "multirun" / "2026-01-01" / "14-00-00" / "0", age_h=5, overrides=["optimizer.lr=0.1"], lr=0.1,
             summary=finished(0.95, 0.1))
    make_run(out / "2026-01-01" / "15-00-00", age_h=0, lock_file=False)  # just started: no lock taken yet
    make_run(out / "eval" / "2026-01-01" / "16-00-00", age_h=0, job="eval")  # not a training run
    return out


def test_statuses_newest_first_and_only_training_runs(outputs):
    live = make_run(outputs / "2026-01-01" / "17-00-00", age_h=0.1, epochs_done=1,
                    summary={"status": "interrupted", "epochs": 1})  # resumed: its summary is its past
    with lock(live):
        runs = find_runs(outputs)
    assert [(r.path.relative_to(outputs).as_posix(), r.status) for r in runs] == [
        ("2026-01-01/15-00-00", "running"),
        ("2026-01-01/17-00-00", "running"),
        ("multirun/2026-01-01/14-00-00/0", "finished"),
        ("2026-01-01/13-00-00", "crashed"),
        ("2026-01-01/12-00-00", "interrupted"),
        ("2026-01-01/11-00-00", "failed"),
        ("2026-01-01/10-00-00", "finished"),
    ]
    by_name = {r.path.name: r for r in runs}
    assert by_name["11-00-00"].error == "training diverged at step 7"
    assert by_name["13-00-00"].epochs == 2 and "killed" in by_name["13-00-00"].error
    assert by_name["17-00-00"].epochs == 1 and by_name["17-00-00"].summary == {}


def test_list_shows_status_best_epochs_overrides_path(outputs, capsys):
    assert main([str(outputs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if "multirun/2026-01-01/14-00-00/0" in line)
    for cell in ("finished", "0.9500 @2", "3/3", "optimizer.lr=0.1"):
        assert cell in row
    position = {name: next(i for i, line in enumerate(lines) if name in line) for name in ("14-00-00", "10-00-00")}
    assert position["14-00-00"] < position["10-00-00"], "newest first"
    assert not any("eval" in line for line in lines)
    assert main([str(outputs), "--limit", "2"]) == 0
    assert "4 older runs not shown" in capsys.readouterr().out


def test_compare_shows_config_differences_and_metrics_side_by_side(outputs, capsys):
    a, b = outputs / "2026-01-01" / "10-00-00", outputs / "multirun" / "2026-01-01" / "14-00-00" / "0"
    (b / "checkpoints").mkdir()
    (b / "checkpoints" / "best.ckpt").write_bytes(b"")
    # As listed (relative to DIR, here the default outputs/), or any path inside a run.
    assert main(["--compare", "2026-01-01/10-00-00", str(b / "checkpoints" / "best.ckpt")]) == 0
    out = capsys.readouterr().out
    diff = next(line for line in out.splitlines() if line.strip("│ ").startswith("optimizer.lr"))
    assert "0.01" in diff and "0.1" in diff
    best = next(line for line in out.splitlines() if "best val/acc" in line)
    assert "0.9100 @2" in best and "0.9500 @2" in best and "+0.04" in best
    assert any("test/acc" in line and "+0.04" in line for line in out.splitlines())


def test_bad_paths_are_errors_for_people(outputs, capsys):
    from trainkit.cli import main

    assert main(["runs", "--compare", str(outputs / "2026-01-01" / "10-00-00"), "nowhere"]) == 1
    assert "error: nowhere is not a run directory" in capsys.readouterr().err
    assert main(["runs", "nowhere"]) == 1
    assert "error: nowhere is not a directory" in capsys.readouterr().err


def test_runs_through_the_cli_without_importing_torch(outputs):
    code = ("import sys; from trainkit.cli import main; code = main(['runs', 'outputs']); "
            "assert 'torch' not in sys.modules, 'torch imported'; raise SystemExit(code)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=outputs.parent,
                          env={**os.environ, "COLUMNS": "250"})
    assert proc.returncode == 0, proc.stderr
    assert "trainkit runs under outputs/: 6, newest first" in proc.stdout
