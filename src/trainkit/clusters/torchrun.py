"""torchrun and torch elastic (also `trainer.devices=N`, which launches its processes through torch's elastic launch
API): the agent sets RANK, LOCAL_RANK and WORLD_SIZE, and restarts the whole group when a process fails
(--max_restarts); the restarted processes find what the first attempt left in the agent's store, so they continue
its run, in its run directory, from its newest checkpoint."""

from __future__ import annotations

import functools
import os
from datetime import timedelta
from typing import Any

from trainkit.clusters import ClusterEnvironment
from trainkit.registry import register_cluster


@register_cluster("torchrun")
class TorchElastic(ClusterEnvironment):
    name = "torchrun"
    priority = 20  # a torchrun group inside a SLURM job is torchrun's: its agent started the processes

    @staticmethod
    def detect() -> bool:
        return "TORCHELASTIC_RUN_ID" in os.environ

    def store(self) -> Any:
        """The agent's store, one prefix per attempt. The agent keeps one store for every restart of its group, and
        a process group's keys in it are not kept apart by attempt (pytorch/pytorch#135712): a restarted rank can
        read the address of a rank that died, and wait for it. Each rank counts its own starts; every rank starts
        once per attempt, so the count names the attempt alike on every node (TORCHELASTIC_RESTART_COUNT does not: it
        counts only this node's failures)."""
        import torch.distributed as dist

        store = _agent_store()
        if store is None:
            return None
        attempt = store.add(f"trainkit/starts/rank{os.environ.get('RANK', '0')}", 1)
        return dist.PrefixStore(f"trainkit/attempt{attempt}/", store)

    def remember(self, key: str, value: str) -> None:
        store = _agent_store()
        if store is not None:
            store.set(_launch_key(key), value)

    def recall(self, key: str) -> str | None:
        store = _agent_store()
        if store is None or not store.check([_launch_key(key)]):
            return None
        return store.get(_launch_key(key)).decode()

    def restarts_left(self) -> int | None:
        """Counted per node: a node whose own processes never failed has used none."""
        if "TORCHELASTIC_MAX_RESTARTS" not in os.environ:
            return None
        return int(os.environ["TORCHELASTIC_MAX_RESTARTS"]) - int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

    def restarted(self) -> str | None:
        if self.recall("run_dir") is not None or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")):
            left = self.restarts_left()
            return f"torch elastic restarted the processes after one of them failed ({left} restart" \
                   f"{'' if left == 1 else 's'} left)"
        return None


@functools.cache  # one connection per process
def _agent_store() -> Any:
    """The store of the torch elastic agent that started this process (torchrun, trainer.devices=N): one per
    launch, kept across the group's restarts. None outside such an agent, or where it keeps no store for its
    processes (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, torchrun --rdzv_backend=static)."""
    import torch.distributed as dist

    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=timedelta(seconds=120))


def _launch_key(key: str) -> str:
    """`key` within this elastic launch: a store that outlives a launch (one sweep process launches job after job)
    never hands one job's memory to the next."""
    return f"trainkit/{os.environ.get('TORCHELASTIC_RUN_ID', 'none')}/{key}"


def launch(nprocs: int, args: list[str], max_restarts: int = 0) -> int:
    """Run `python -m trainkit train ARGS` in `nprocs` processes on this machine through torch's elastic
    launch API (the machinery behind torchrun) and return their exit code (the first failure's). When a
    process fails, the agent restarts all of them up to `max_restarts` times; they continue the run."""
    import signal
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nprocs, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=max_restarts,
                          monitor_interval=0.5)
    try:
        elastic_launch(config, sys.executable)("-m", "trainkit", "train", *args)
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values()]
        code = next((c for c in codes if c in (130, 143)), codes[0] if codes else 1)
        return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell reports it
    except SignalException as exc:
        # The launcher was signalled: the agent passed the signal on and waited while the processes
        # finished their step and saved. Exit as they did: 130 for SIGINT, 143 for SIGTERM.
        return 130 if exc.sigval == signal.SIGINT else 143
    return 0
