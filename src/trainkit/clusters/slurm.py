"""SLURM: a job of one or more tasks (sbatch, srun, Hydra's submitit launcher: hydra/launcher=slurm). SLURM's own
variables describe the process group, which submitit turns into torch.distributed's; SIGUSR1 (the warning SLURM sends
before a time limit or a pre-emption, `--signal=USR1@SECONDS`) and SIGTERM make the run save and stop, and the job then
puts itself back in the queue (`scontrol requeue`): the requeued job runs the same command in the same run directory
and continues from the saved checkpoint."""

from __future__ import annotations

import os
import signal

from trainkit.clusters import ClusterEnvironment
from trainkit.registry import register_cluster


@register_cluster("slurm")
class Slurm(ClusterEnvironment):
    name = "slurm"
    priority = 10

    @staticmethod
    def detect() -> bool:
        return "SLURM_JOB_ID" in os.environ

    def join(self) -> None:
        """A job of several tasks: export the torch.distributed environment (RANK, WORLD_SIZE, LOCAL_RANK,
        MASTER_ADDR/PORT) that SLURM's variables describe, then join the group."""
        if "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            from submitit.helpers import TorchDistributedEnvironment

            TorchDistributedEnvironment().export()
        super().join()

    def restarted(self) -> str | None:
        if int(os.environ.get("SLURM_RESTART_COUNT", "0")):
            return f"SLURM requeued this job (restart {os.environ['SLURM_RESTART_COUNT']})"
        return None

    def requeue(self, signum: int) -> str | None:
        """`scontrol requeue` this job (not after Ctrl-C: a person stopped it)."""
        import subprocess

        job = os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID")
        job_id = (f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job
                  else os.environ.get("SLURM_JOB_ID"))
        if not job_id or signum == signal.SIGINT:
            return None
        try:
            done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"could not requeue SLURM job {job_id}: {exc}"
        if done.returncode:
            return f"could not requeue SLURM job {job_id}: {done.stderr.strip() or done.returncode}"
        return f"requeued SLURM job {job_id}; it continues from the saved checkpoint when it runs again"
