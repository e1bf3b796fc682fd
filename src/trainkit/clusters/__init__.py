"""Cluster environments: where a training process runs, and what that means for it. One file each (single.py,
torchrun.py, slurm.py), registered by name (`trainkit.register_cluster`); an environment of your own is one file in
a plugin. Each owns, for its kind of cluster: detecting that a process runs there, the process group's rank/world
environment, the signals that mean "save and stop" (a pre-emption warning), putting a stopped job back in the queue,
and what a restarted process must know of its first attempt. `trainer.cluster=auto` (the default) picks the detected
environment with the highest `priority`; `trainer.cluster=NAME` names one.

The training loop and the Trainer know none of this: commands/train.py asks the environment.
"""

from __future__ import annotations

import signal
from typing import Any

from trainkit.errors import EXIT_CODES, ConfigError


class ClusterEnvironment:
    """The plain case, and the base of every environment: override what differs."""

    name = "single"
    priority = 0  # trainer.cluster=auto: among the environments that detect themselves, the highest wins
    restarter = "torch elastic"  # what restarts a process group after one of its processes failed (for messages)
    worker = False  # a process that a launcher started as one of a run's (Ray Train's): it is the run, even alone
    # A signal → the exit code of a run it stopped after saving. SIGUSR1 is SLURM's usual warning before a time limit
    # or a pre-emption, and harmless elsewhere, so every environment takes it.
    stop_signals: dict[int, int] = {signal.SIGINT: EXIT_CODES["sigint"], signal.SIGTERM: EXIT_CODES["sigterm"],
                                    signal.SIGUSR1: EXIT_CODES["sigterm"]}

    @staticmethod
    def detect() -> bool:
        """Whether this process runs in such an environment (read its environment variables: no network)."""
        return True

    def join(self) -> None:
        """Join the process group that the environment variables RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT
        describe (torch.distributed's env://); a no-op for one process or when already joined."""
        from trainkit.engine import distributed

        distributed.setup(self.store())

    def store(self) -> Any:
        """A torch.distributed Store for the process group's rendezvous, or None for env:// alone."""
        return None

    def remember(self, key: str, value: str) -> None:
        """Keep `value` for a restarted attempt of this process (where the environment restarts processes)."""

    def recall(self, key: str) -> str | None:
        """What an earlier attempt of this process kept under `key`; None on a first attempt."""
        return None

    def restarted(self) -> str | None:
        """Why this process continues a run that an earlier process of the same job trained (for the log), or None."""
        return None

    def restarts_left(self) -> int | None:
        """How many more times the environment restarts the group when a process fails; None: it never does."""
        return None

    def requeue(self, signum: int) -> str | None:
        """After a stop on `signum` (the run saved), put the job back in the scheduler's queue where there is one;
        what was done, for the log, or None."""
        return None


def detect(name: str = "auto") -> ClusterEnvironment:
    """The environment `trainer.cluster` names, or with `auto` the detected one of highest priority."""
    from trainkit import registry

    if name != "auto":
        if name not in registry.CLUSTERS:
            raise ConfigError(f"trainer.cluster={name!r} is not a cluster environment: use auto, or one of "
                              f"{', '.join(registry.CLUSTERS.names())}.")
        return registry.CLUSTERS.get(name).load()()
    found = [entry.load() for entry in registry.CLUSTERS.entries.values()]
    return max((cls for cls in found if cls.detect()), key=lambda cls: cls.priority, default=ClusterEnvironment)()
