"""The one place where trainkit decides which device runs, and what that device wants switched on."""

from __future__ import annotations

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
