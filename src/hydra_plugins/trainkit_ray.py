"""trainkit's Ray launcher for Hydra (hydra/launcher=ray: configs/hydra/launcher/ray.yaml): each job of a sweep runs as
a Ray task on the cluster that RAY_ADDRESS names, side by side as the cluster has room, as Hydra's joblib launcher runs
them in processes of this machine. The jobs write their directories where a local sweep's go (a shared file system, or
object storage), so the sweep ends with the same table, and `trainkit sweep resume DIR` finishes it on Ray again.

Hydra imports every module of hydra_plugins whenever it starts: this one imports Ray only when a sweep launches.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher

log = logging.getLogger(__name__)


class RayLauncher(Launcher):
    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0) -> None:
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.config = self.task_function = self.hydra_context = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Each job as a Ray task: its result, or, where its Ray worker was lost, a row that says so (the job's
        directory keeps its checkpoints for `trainkit sweep resume`)."""
        from hydra.core.singleton import Singleton
        from hydra.core.utils import configure_log, filter_overrides, setup_globals

        from trainkit.clusters.ray import connect, describe, jobs_as_tasks

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        ray = connect("hydra/launcher=ray", self.address)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        print(f"ray: {jobs_as_tasks(len(job_overrides))} on {describe(ray)}", flush=True)
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
        task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0)(_execute_job)
        state = Singleton.get_state()
        refs = [task.remote(initial_job_idx + idx, list(overrides), self.hydra_context, self.config,
                            self.task_function, state, os.getcwd()) for idx, overrides in enumerate(job_overrides)]
        try:
            return [_result(ray, ref, list(overrides), initial_job_idx + idx)
                    for idx, (ref, overrides) in enumerate(zip(refs, job_overrides))]
        except BaseException:  # Ctrl-C or SIGTERM: the jobs still running are stopped too
            for ref in refs:
                ray.cancel(ref)
            raise


def _result(ray: Any, ref: Any, overrides: list[str], num: int) -> JobReturn:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:  # the task's worker process was lost (a node went, a kill -9)
        said = " ".join(str(exc).split())[:200]
        print(f"error: job {num}'s Ray task was lost ({type(exc).__name__}: {said}); the sweep goes on, and `trainkit "
              f"sweep resume` continues the job from its last checkpoint.", file=sys.stderr, flush=True)
        return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=None)


def _execute_job(idx: int, overrides: list[str], hydra_context: Any, config: Any, task_function: Any,
                 singleton_state: dict, cwd: str) -> JobReturn:
    """One job in a Ray worker, as Hydra's joblib launcher runs one in its worker processes."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    if os.path.isdir(cwd):  # a shared file system: the sweep's relative paths mean what they meant where typed
        os.chdir(cwd)
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
