"""Graceful stops: a signal asks the loop to finish its step and save; the loop decides when.

SIGINT once: finish the step, save, exit 130; SIGINT twice: stop at once. SIGTERM and SIGUSR1 (SLURM's
pre-emption warning): finish the step, save, exit 143 so a scheduler can requeue the job.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from trainkit.errors import UserError

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGUSR1: 143}


class Interrupted(UserError):
    """The run stopped on a signal after saving a checkpoint it can resume from."""

    keeps_run_dir = True

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = EXIT_CODES.get(signal.Signals(signum), 143)


class StopRequest:
    """Installs the handlers for the duration of a `with` block; `requested` is the pending signal or None."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.requested is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.requested == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without saving
        self.requested = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()


def requeue_on_slurm(signum: int) -> str | None:
    """After a pre-emption signal inside a SLURM job, put the job back in the queue (`scontrol requeue`);
    the requeued job runs the same command in the same run directory and continues from the saved
    checkpoint (commands/train.py). Returns what it did, for the log; None outside SLURM or for Ctrl-C."""
    import os
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
