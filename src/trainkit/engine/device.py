"""The one place where trainkit decides which device runs, and what that device wants switched on."""

from __future__ import annotations

import ctypes
import os

import torch


def resolve_device(spec: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; anything else must name an available device."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            spec = "cuda"
        elif torch.backends.mps.is_available():
            spec = "mps"
        else:
            spec = "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(
            f"trainer.device={spec!r} is not a device: use auto, cpu, cuda, cuda:N or mps."
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"trainer.device={spec} but this machine has no usable CUDA device "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Use trainer.device=cpu or auto."
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"trainer.device={spec} but only cuda:0..cuda:{count - 1} exist.")
        if device.index is None:  # one GPU per process when data-parallel: the launcher's LOCAL_RANK
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
        torch.cuda.set_device(device)
        # Fixed input shapes in every run here: let cuDNN pick the fastest kernels once.
        torch.backends.cudnn.benchmark = True
    elif device.type == "cpu":
        keep_freed_host_memory()
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("trainer.device=mps but MPS is not available here. Use trainer.device=cpu or auto.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"trainer.device={spec!r}: trainkit supports auto, cpu, cuda, cuda:N and mps.")
    return device


def set_deterministic(enabled: bool) -> None:
    """Bitwise-repeatable kernels where torch has them (errors where it has none, rather than lie)."""
    if enabled:
        # cuBLAS needs this workspace setting for deterministic matmuls on CUDA.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(enabled)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_MAX = 32 << 20  # the largest mmap threshold glibc accepts on 64-bit systems
_KEEP_FREED = 1 << 30


def keep_freed_host_memory() -> None:
    """Training on the CPU frees and allocates the same activations at every step. glibc's malloc hands the freed top
    of its heap back to the kernel once more than M_TRIM_THRESHOLD of it is free, and takes it again at the next step,
    where every page costs a page fault: 10,500-16,600 a step for cifar10_fast, 7-9% of its step time
    (benchmarks/README.md). Keeping up to 1 GB of freed heap for reuse (blocks over 32 MB are still mapped and
    returned on their own) is what PyTorch's CPU performance guide gets from jemalloc or tcmalloc. Setting the trim
    threshold freezes glibc's sliding mmap threshold, so that is set too, at its maximum. Without glibc's mallopt
    (macOS, musl) this does nothing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX)
    mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED)
