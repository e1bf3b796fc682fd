"""The Hydra callback of every sweep (configs/train.yaml names it): each job gets its share of the CPU threads when
jobs run side by side, `sweep.fail_fast=true` stops a sweep at the first job that did not finish, and at the end the
sweep's summary is written and printed (trainkit.rundirs.sweeps)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from trainkit.rundirs.read import read_run
from trainkit.rundirs.sweeps import report

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        share_threads(config)

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        """sweep.fail_fast=true: a job that did not finish stops the sweep (the jobs so far are summarised)."""
        if not OmegaConf.select(config, "sweep.fail_fast", default=False):
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        if not job_dir.is_dir():  # a resumed search trial: `train` moved on into its own job directory
            return
        run = read_run(job_dir)  # reads damaged files as saying nothing: it does not raise
        if run.status in ("finished", "running"):
            return
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"[bold red]error:[/bold red] job {config.hydra.job.num} {run.status} and sweep.fail_fast=true: the "
            f"sweep stops here (sweep.fail_fast=false runs the other jobs on).")
        raise SystemExit(1)  # not an Exception: Hydra's callbacks runner would only warn; the CLI summarises

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            code = report(Path(config.hydra.sweep.dir), Console(highlight=False, soft_wrap=True))
        except Exception as exc:  # a summary that cannot be written (a folder in its place, a full disk)
            from trainkit.cli.failure import say

            code = say(exc)
        if code:
            raise SystemExit(code)  # Hydra's callbacks runner would turn an Exception into a mere warning


def share_threads(config: DictConfig) -> None:
    """Jobs run side by side by the joblib launcher share the CPU: each gets cpu_count // n_jobs torch threads
    (at least 1), unless trainer.num_threads says otherwise."""
    launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    if "joblib" not in launcher or OmegaConf.select(config, "trainer.num_threads", default=None) is not None:
        return
    import joblib
    import torch

    n_jobs = joblib.effective_n_jobs(OmegaConf.select(config, "hydra.launcher.n_jobs", default=-1))
    threads = max(1, joblib.cpu_count() // max(1, n_jobs))
    torch.set_num_threads(threads)
    log.info("torch threads: %d (%d CPUs shared by %d parallel jobs)", threads, joblib.cpu_count(), n_jobs)
