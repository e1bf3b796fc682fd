"""Data-parallel training on torch.distributed: the process group, DDP, and the few collectives the loop needs.

torchrun (or `trainkit train trainer.devices=N`, through torch's elastic launch API) starts the processes
and sets RANK, LOCAL_RANK and WORLD_SIZE; this module only reads them. Backend: nccl on CUDA, gloo on
the CPU. Outside a launcher every function here is a cheap no-op for a single process.
"""

from __future__ import annotations

import os
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


def setup() -> None:
    """Join the process group the launcher described (env://). CUDA tensors go through nccl, everything
    else (CPU tensors, Python objects) through gloo, so one group serves both."""
    if world_size() <= 1 or active():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)


def teardown() -> None:
    """Leave the group together: every rank past its last collective before any destroys its end of it."""
    if active():
        dist.barrier()
        dist.destroy_process_group()


def agree(value: Any) -> Any:
    """Rank 0's `value` on every rank (e.g. the run directory it claimed)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


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


def launch(nprocs: int, args: list[str]) -> int:
    """Run `python -m trainkit train ARGS` in `nprocs` processes on this machine through torch's elastic
    launch API (the machinery behind torchrun) and return their exit code (the first failure's)."""
    import signal
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nprocs, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5)
    try:
        elastic_launch(config, sys.executable)("-m", "trainkit", "train", *args)
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values()]
        return next((c for c in codes if c in (130, 143)), codes[0] if codes else 1)
    except SignalException as exc:
        # The launcher was signalled: the agent passed the signal on and waited while the processes
        # finished their step and saved. Exit as they did: 130 for SIGINT, 143 for SIGTERM.
        return 130 if exc.sigval == signal.SIGINT else 143
    return 0
