"""Checkpoints: crash-safe writes, safe reads, and the last/best bookkeeping of a run.

A checkpoint holds only plain types and tensors, so it loads with `torch.load(weights_only=True)`
and nothing else; what it holds (the recipe, the states) is decided by whoever calls `save`.
"""

from __future__ import annotations

import math
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

import torch

from trainkit.errors import UserError

FORMAT_VERSION = 1


class CheckpointError(UserError):
    """A checkpoint that cannot be written or read. The message names the file and the fix."""


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: temp file in the same directory, fsync, rename over `path`, fsync the directory.
    A crash at any moment leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CheckpointError(
                f"could not write checkpoint {path}: {exc.strerror or exc}. The previous checkpoint there "
                f"(if any) is intact. Free disk space or choose a writable output directory (hydra.run.dir)."
            ) from exc
        raise


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint that may come from anywhere: only tensors and plain types are ever unpickled."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist. Set ckpt= to a .ckpt file written by trainkit.") from None
    if not stat.S_ISREG(mode):  # a FIFO or device would block or stream forever
        raise CheckpointError(f"checkpoint {path} is not a regular file. Set ckpt= to a .ckpt file written by trainkit.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was never written completely.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise CheckpointError(
            f"checkpoint {path} cannot be read safely ({_reason(exc)}). It is truncated, corrupt, not a trainkit "
            f"checkpoint, or asks to unpickle code; trainkit never loads such files with full unpickling."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != "trainkit" or "config" not in payload:
        raise CheckpointError(f"{path} is a torch file but not a trainkit checkpoint (no trainkit format marker).")
    return payload


def _reason(exc: Exception) -> str:
    """The useful line of torch's long weights_only message: the global it refused, if any."""
    text = str(exc)
    refused = re.search(r"(?:Unsupported global|unsupported GLOBAL):? (?:GLOBAL )?([\w.]+)", text)
    if refused:
        return f"it asks to unpickle the global {refused.group(1)}, which is not a tensor or a plain type"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def is_better(value: float, best: float | None, mode: str) -> bool:
    """A NaN is never better; anything finite beats no best yet."""
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


class CheckpointManager:
    """Keeps `last.ckpt` and `best.ckpt` (by the task's monitored metric) in one directory."""

    def __init__(self, directory: Path, monitor: str, mode: str) -> None:
        self.directory, self.monitor, self.mode = Path(directory), monitor, mode
        self.best: float | None = None
        self.best_epoch: int | None = None

    @property
    def last_path(self) -> Path:
        return self.directory / "last.ckpt"

    @property
    def best_path(self) -> Path:
        return self.directory / "best.ckpt"

    def update(self, payload_fn: Any, metrics: dict[str, float], epoch: int) -> bool:
        """Save last; also save best when the monitored metric improved. Returns whether it did."""
        value = metrics.get(self.monitor)
        improved = is_better(value, self.best, self.mode)
        if improved:
            self.best, self.best_epoch = value, epoch
        payload = payload_fn()
        save(self.last_path, payload)
        if improved:
            save(self.best_path, payload)
        return improved

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, "best": self.best, "best_epoch": self.best_epoch}


def make_payload(config_yaml: str, modules: dict[str, Any], optimization: Any, fit_state: Any,
                 manager: CheckpointManager, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a checkpoint carries: its recipe (the resolved config), every state, and versions."""
    from trainkit import __version__
    from trainkit.engine.rng import rng_state

    return {
        "format": "trainkit",
        "format_version": FORMAT_VERSION,
        "config": config_yaml,
        "modules": {name: m.state_dict() for name, m in modules.items()},
        "optimization": optimization.state_dict(),
        "fit": {"epoch": fit_state.epoch, "step": fit_state.step, "history": fit_state.history},
        "best": manager.state_dict(),
        "rng": rng_state(),
        "versions": {"trainkit": __version__, "torch": str(torch.__version__)},  # TorchVersion is not a plain str
        **(extra or {}),
    }


def load_modules(payload: dict[str, Any], modules: dict[str, Any], path: str | Path) -> None:
    """Load module weights, or say exactly which keys and shapes do not match this model."""
    stored = payload.get("modules", {})
    for name, module in modules.items():
        if name not in stored:
            raise CheckpointError(f"checkpoint {path} has no weights for '{name}' (it has: {', '.join(stored) or 'none'}).")
        try:
            module.load_state_dict(stored[name], strict=True)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())
            raise CheckpointError(
                f"checkpoint {path} does not fit this model ({name}): {detail} The checkpoint belongs to another "
                f"model or data config; do not override model.* or the dataset's shape when evaluating it."
            ) from None
