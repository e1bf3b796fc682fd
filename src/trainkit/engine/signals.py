"""Graceful stops: a signal asks the loop to finish its step and save; the loop decides when.

SIGINT once: finish the step, save, exit 130; SIGINT twice: stop at once. SIGTERM and SIGUSR1 (SLURM's
pre-emption warning): finish the step, save, exit 143 so a scheduler can requeue the job. Before the loop first asks
(while data is read, the model built, a tracker reached), there is nothing to save: a signal stops at once. Which
signals stop a run is the cluster environment's to say (trainkit.clusters); what a requeue is, too.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from trainkit.errors import EXIT_CODES as CODES
from trainkit.errors import UserError

EXIT_CODES = {signal.SIGINT: CODES["sigint"], signal.SIGTERM: CODES["sigterm"], signal.SIGUSR1: CODES["sigterm"]}


class Interrupted(UserError):
    """The run stopped on a signal after saving a checkpoint it can resume from."""

    keeps_run_dir = True

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = EXIT_CODES.get(signal.Signals(signum), CODES["sigterm"])


class NotStarted(Interrupted):
    """A stop signal before training began: nothing was saved, and the half-made run directory goes."""

    keeps_run_dir = False


class StopRequest:
    """Installs the handlers of `signals` (default: SIGINT, SIGTERM, SIGUSR1) for the duration of a `with` block;
    `requested` is the pending signal or None. Until something first reads `requested` (the loop, after its first
    step), a signal raises NotStarted at once: a build that waits on the network or a pipe still stops."""

    def __init__(self, signals: dict[int, int] | None = None) -> None:
        self._requested: int | None = None
        self.watched = False  # the loop has asked: from now on a signal means "finish the step and save"
        self.signals = list(signals if signals is not None else EXIT_CODES)
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> int | None:
        self.watched = True
        return self._requested

    @requested.setter
    def requested(self, signum: int | None) -> None:
        self._requested = signum

    def __bool__(self) -> bool:
        return self.requested is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.watched:
            name = signal.Signals(signum).name
            raise NotStarted(f"stopped by {name} before training began (while the run was being built): nothing was "
                             f"saved. Run the command again to train.", signum)
        if signum == signal.SIGINT and self._requested == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without saving
        self._requested = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
