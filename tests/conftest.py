"""Shared fixtures: the real shipped configs composed through Hydra, and the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cluster import pytest_terminal_summary, slurm_cluster  # noqa: F401 (a real SLURM cluster)
from hypothesis import settings

# The fuzz tests (test_fuzz.py): seeded in every run, so CI is repeatable; `--hypothesis-profile=long` explores
# 20 times as many cases, differently each time.
settings.register_profile("trainkit", derandomize=True, database=None, max_examples=100)
settings.register_profile("long", derandomize=False, database=None, max_examples=2000)
settings.load_profile("trainkit")

ROOT = Path(__file__).resolve().parents[1]
TRAINKIT = [sys.executable, "-m", "trainkit"]
# Tiny, quick runs: the tests check behaviour, not accuracy (benchmarks/ measures that on real data).
FAST = ["trainer.progress=plain", "trainer.log_every_n_steps=5"]


def run_cli(*args: str, cwd: Path, check: bool = True, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`trainkit ARGS` in `cwd`, as a user would type it; output captured as text."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", "COLUMNS": "200", **(env or {})}
    proc = subprocess.run([*TRAINKIT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"trainkit {' '.join(args)} exited {proc.returncode}\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}")
    return proc


def run_dirs(cwd: Path) -> list[Path]:
    """Run directories under cwd/outputs (single runs), oldest first."""
    return sorted(p.parent for p in (cwd / "outputs").glob("*/*/.hydra") if p.parent.parent.name not in ("multirun", "eval"))


def job_dir(sweep_dir: Path, num: int | str) -> Path:
    """A sweep job's directory, `<num>_<overrides>` (or `<num>` when it has none)."""
    (found,) = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.split("_", 1)[0] == str(num)]
    return found


@pytest.fixture
def compose():
    """compose(*overrides, config="train") → the DictConfig the CLI would build from the shipped configs."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from trainkit.cli.compose import config_dir, register_schemas

    register_schemas()

    def _compose(*overrides: str, config: str = "train", return_hydra: bool = False):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose(config_name=config, overrides=list(overrides), return_hydra_config=return_hydra)

    return _compose


@pytest.fixture
def mnist_files(tmp_path: Path) -> dict[str, Path]:
    """Tiny learnable MNIST CSVs in both real layouts."""
    from factories import write_mnist_csv

    files = {
        "kaggle_train": tmp_path / "kaggle" / "train.csv",
        "kaggle_test": tmp_path / "kaggle" / "test.csv",
        "plain_train": tmp_path / "plain" / "mnist_train.csv",
        "plain_test": tmp_path / "plain" / "mnist_test.csv",
    }
    for p in files.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    write_mnist_csv(files["kaggle_train"], n=400, layout="kaggle", seed=0)
    write_mnist_csv(files["kaggle_test"], n=100, layout="kaggle", seed=1)
    write_mnist_csv(files["plain_train"], n=400, layout="headerless", seed=2)
    write_mnist_csv(files["plain_test"], n=100, layout="headerless", seed=3)
    return files


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """A tiny CIFAR-10 in the official python layout; returns the directory that holds cifar-10-batches-py/."""
    from factories import write_cifar10

    root = tmp_path / "cifar"
    write_cifar10(root, n_per_batch=300, batches=("data_batch_1",), with_test=True)
    return root


def fit(cfg, run_dir: Path, epochs: int | None = None, resume: Path | None = None):
    """A Trainer of `cfg` trained in `run_dir` up to `epochs` (default trainer.max_epochs), from the checkpoint
    `resume` if given, in this process (no CLI start-up): the cheap way to prove that a resume is exact."""
    from trainkit.build import build_trainer

    trainer = build_trainer(cfg, run_dir, resume=resume)
    try:
        trainer.fit(epochs)
    finally:
        trainer.close()
    return trainer


def untimed(row: dict[str, float]) -> dict[str, float]:
    """A metrics row without its wall-clock columns, which no two runs share."""
    return {k: v for k, v in row.items() if not k.startswith(("time/", "train/samples_per_s"))}


def stop_sweep_during_job(sweep_dir: Path, num: int, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Start `trainkit train -m ARGS` and Ctrl-C it (SIGINT to its process group, as a terminal does) once job `num`
    has saved its first checkpoint: the jobs before it have finished."""
    import signal
    import time

    env = {**os.environ, "COLUMNS": "200", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen([*TRAINKIT, "train", "-m", *args, f"hydra.sweep.dir={sweep_dir}"], cwd=cwd, env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if list(sweep_dir.glob(f"{num}_*/checkpoints/last.ckpt")):
            os.killpg(proc.pid, signal.SIGINT)
            break
        time.sleep(0.005)
    out, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
