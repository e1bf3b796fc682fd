"""Data-parallel training on torch.distributed: the process group, DDP, and the few collectives the loop needs.

torchrun (or `trainkit train trainer.devices=N`, through torch's elastic launch API) starts the processes
and sets RANK, LOCAL_RANK and WORLD_SIZE; this module only reads them. Backend: nccl on CUDA, gloo on
the CPU. Outside a launcher every function here is a cheap no-op for a single process.

When a process fails, the elastic agent restarts the whole group (torchrun --max_restarts): the restarted
processes find what the first attempt left in the agent's store (`recall`), so they continue its run.
"""

from __future__ import annotations

import functools
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def from_slurm() -> None:
    """Inside a SLURM job of several tasks (Hydra's submitit launcher): export the torch.distributed
    environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) that SLURM's own variables describe."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export()


_OWNED: list[bool] = []  # non-empty while this process holds a group that `setup` made


def setup() -> None:
    """Join the process group the launcher described (env://). CUDA tensors go through nccl, everything
    else (CPU tensors, Python objects) through gloo, so one group serves both."""
    if world_size() <= 1 or active():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    store = _agent_store()
    _OWNED.append(True)
    if store is None:
        dist.init_process_group(backend=backend)
        return
    # The agent keeps one store for every restart of its group, and a process group's keys in it are not kept
    # apart by attempt (pytorch/pytorch#135712): a restarted rank can read the address of a rank that died, and
    # wait for it. Each rank counts its own starts; every rank starts once per attempt, so the count names the
    # attempt alike on every node (TORCHELASTIC_RESTART_COUNT does not: it counts only this node's failures).
    attempt = store.add(f"trainkit/starts/rank{rank()}", 1)
    dist.init_process_group(backend=backend, store=dist.PrefixStore(f"trainkit/attempt{attempt}/", store),
                            rank=rank(), world_size=world_size())


@functools.cache  # one connection per process
def _agent_store() -> dist.Store | None:
    """The store of the torch elastic agent that started this process (torchrun, trainer.devices=N): one per
    launch, kept across the group's restarts. None outside such an agent, or where it keeps no store for its
    processes (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, torchrun --rdzv_backend=static)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=timedelta(seconds=120))


def _launch_key(key: str) -> str:
    """`key` within this elastic launch: a store that outlives a launch (one sweep process launches job after job)
    never hands one job's memory to the next."""
    return f"trainkit/{os.environ.get('TORCHELASTIC_RUN_ID', 'none')}/{key}"


def remember(key: str, value: str) -> None:
    """Keep `value` for the restarts of this elastic launch (a no-op outside one)."""
    store = _agent_store()
    if store is not None:
        store.set(_launch_key(key), value)


def recall(key: str) -> str | None:
    """What an earlier attempt of this elastic launch kept under `key`: None on the first attempt, or outside."""
    store = _agent_store()
    if store is None or not store.check([_launch_key(key)]):
        return None
    return store.get(_launch_key(key)).decode()


def restarts_left() -> int | None:
    """How many more times torch elastic restarts this group when a process fails; None outside its agent. Counted
    per node: a node whose own processes never failed has used none."""
    if "TORCHELASTIC_MAX_RESTARTS" not in os.environ:
        return None
    return int(os.environ["TORCHELASTIC_MAX_RESTARTS"]) - int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def restarted() -> str | None:
    """Why this process continues a run that an earlier process of the same job was training, for the log: a
    restart of the elastic group (its agent's store has the run directory) or a requeued SLURM job; else None."""
    if recall("run_dir") is not None or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")):
        left = restarts_left()
        return f"torch elastic restarted the processes after one of them failed ({left} restart" \
               f"{'' if left == 1 else 's'} left)"
    if int(os.environ.get("SLURM_RESTART_COUNT", "0")):
        return f"SLURM requeued this job (restart {os.environ['SLURM_RESTART_COUNT']})"
    return None


def lost_peer(exc: BaseException) -> bool:
    """A collective failed because another process of the group is gone. gloo says so in a plain RuntimeError
    that names it or the broken connection; NCCL and torch's own checks raise DistError."""
    return isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and any(
        word in str(exc) for word in ("gloo", "NCCL", "Connection closed by peer", "Connection reset by peer")))


def teardown() -> None:
    """Leave the group together: every rank past its last collective before any destroys its end of it. Only a
    group that `setup` made: one the caller made (a script around trainkit.train) stays theirs."""
    if active() and _OWNED:
        dist.barrier()
        dist.destroy_process_group()
        _OWNED.clear()


def agree(value: Any) -> Any:
    """Rank 0's `value` on every rank (e.g. the run directory it claimed)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every rank's `value` (tensors in it moved to the CPU), in rank order, on every rank."""
    value = _on_cpu(value)
    if not active():
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def _on_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


def barrier() -> None:
    if active():
        dist.barrier()


def all_sum(t: Tensor) -> Tensor:
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: int | None) -> int | None:
    """A pending stop signal on any rank, for every rank: all ranks must stop after the same step."""
    if not active():
        return flag
    t = torch.tensor([flag or 0], dtype=torch.long)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item()) or None


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `module` in a process group, the module itself otherwise."""
    if not active() or not any(p.requires_grad for p in module.parameters()):
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def shard(indices: Tensor, batch_size: int) -> Tensor:
    """This rank's part of one global batch: rank r takes the r-th slice of batch_size samples, so the
    union over ranks is exactly the batch a single process would take at batch_size × world_size."""
    return indices[rank() * batch_size:(rank() + 1) * batch_size]


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
