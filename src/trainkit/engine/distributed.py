"""Data-parallel training on torch.distributed: the process group, DDP, and the few collectives the loop needs.

A launcher (torchrun, `trainer.devices=N`, SLURM through trainkit.clusters) starts the processes and sets RANK,
LOCAL_RANK and WORLD_SIZE, torch.distributed's env:// contract; this module only reads them. Backend: nccl on CUDA,
gloo on the CPU. Outside a launcher every function here is a cheap no-op for a single process. What a cluster
adds (restarts, requeues, where a rendezvous store lives) is trainkit.clusters'.
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


_OWNED: list[bool] = []  # non-empty while this process holds a group that `setup` made


def setup(store: dist.Store | None = None) -> None:
    """Join the process group the launcher described: through `store` (a cluster environment's rendezvous store)
    or env://. CUDA tensors go through nccl, everything else (CPU tensors, Python objects) through gloo, so one
    group serves both."""
    if world_size() <= 1 or active():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    _OWNED.append(True)
    if store is None:
        dist.init_process_group(backend=backend)
        return
    dist.init_process_group(backend=backend, store=store, rank=rank(), world_size=world_size())


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
