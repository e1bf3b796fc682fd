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
