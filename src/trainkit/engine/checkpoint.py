"""Checkpoints: crash-safe writes, safe reads, and the last/best bookkeeping of a run.

A checkpoint holds only plain types and tensors, so it loads with `torch.load(weights_only=True)`
and nothing else. It stands alone: besides its recipe and states it carries what eval, predict, export
and sample need of the data (`data_section`), so a model is usable where its training files are not.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import shutil
import stat
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainkit.data.base import DataMeta, Split
from trainkit.errors import UserError

# 1: trainkit 0.1.0, no data section (restore reads the training data its config names instead).
# 2: a "data" section: the data's metadata and a few real samples as stored.
FORMAT_VERSION = 2


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
        _fsync_dir(path.parent)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CheckpointWriteError(
                f"could not write checkpoint {path}: {exc.strerror or exc}. The previous checkpoint there "
                f"(if any) is intact. Free disk space or choose a writable output directory (hydra.run.dir)."
            ) from exc
        raise


def in_run(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's best checkpoint (its last where none was best yet)."""
    path = Path(path)
    if not path.is_dir():
        return path
    for candidate in (path / "checkpoints" / "best.ckpt", path / "checkpoints" / "last.ckpt"):
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"{path} is a directory without checkpoints/best.ckpt or checkpoints/last.ckpt: give a "
                          f".ckpt file written by trainkit, or the run directory `trainkit train` printed.")


@dataclass
class Saved:
    """A checkpoint read from disk: where it is and what it holds."""

    path: Path
    payload: dict[str, Any]

    @classmethod
    def read(cls, path: str | Path) -> Saved:
        return cls(in_run(path), load(path))


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint that may come from anywhere: only tensors and plain types are ever unpickled. A run
    directory means its best checkpoint."""
    path = in_run(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist. Set ckpt= to a .ckpt file written by trainkit "
                              f"(or a run directory).") from None
    if not stat.S_ISREG(mode):  # a FIFO or device would block or stream forever
        raise CheckpointError(f"checkpoint {path} is not a regular file. Set ckpt= to a .ckpt file written by trainkit.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was never written completely.")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save writes a zip archive (older: a pickle)
        raise CheckpointError(f"{path} is not a checkpoint: it is {_what(head)}, and trainkit's checkpoints are "
                              f"torch files. Set ckpt= to a .ckpt file written by trainkit train (or a run directory).")
    try:
        with warnings.catch_warnings():  # a damaged file makes torch warn about odd pickle protocols: said below
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise CheckpointError(
            f"checkpoint {path} cannot be read safely ({_reason(exc)}). It is truncated, corrupt, not a trainkit "
            f"checkpoint, or asks to unpickle code; trainkit never loads such files with full unpickling."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != "trainkit" or "config" not in payload:
        raise CheckpointError(f"{path} is a torch file but not a trainkit checkpoint (no trainkit format marker).")
    return payload


def _what(head: bytes) -> str:
    kinds = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"\x1f\x8b": "a gzip file",
             b"%PDF": "a PDF file"}
    found = next((kind for magic, kind in kinds.items() if head.startswith(magic)), None)
    if found:
        return found
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return f"a text file (it starts with {head.decode()!r})"
    return f"not a torch file (its first bytes are {head!r})"


def _reason(exc: Exception) -> str:
    """The useful line of torch's long weights_only message: the global it refused, if any."""
    text = str(exc)
    refused = re.search(r"(?:Unsupported global|unsupported GLOBAL):? (?:GLOBAL )?([\w.]+)", text)
    if refused:
        return f"it asks to unpickle the global {refused.group(1)}, which is not a tensor or a plain type"
    # torch's message advises loading with weights_only=False: that runs any code in the file, so never pass it on.
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return lines[0][:200] if lines else type(exc).__name__


def is_better(value: float, best: float | None, mode: str) -> bool:
    """A NaN is never better; anything finite beats no best yet."""
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


class CheckpointWriteError(CheckpointError):
    """A save that failed: the run stops, and what it wrote before stays."""

    keeps_run_dir = True


class CheckpointManager:
    """The checkpoints of one run: `epochE-stepS.ckpt` files (the newest `keep_last_k` kept), plus
    `last.ckpt` and `best.ckpt` (by the task's monitored metric) as hard links to them.

    Every save goes: new checkpoint committed → `last` updated → `best` updated → old ones pruned,
    so a crash at any point leaves `last` and `best` pointing at complete files."""

    def __init__(self, directory: Path, monitor: str, mode: str, keep_last_k: int = 2) -> None:
        self.directory, self.monitor, self.mode, self.keep_last_k = Path(directory), monitor, mode, keep_last_k
        self.best: float | None = None
        self.best_epoch: int | None = None

    @property
    def last_path(self) -> Path:
        return self.directory / "last.ckpt"

    @property
    def best_path(self) -> Path:
        return self.directory / "best.ckpt"

    def save_step(self, payload_fn: Callable[[], dict[str, Any]], epoch: int, step: int) -> Path:
        """A mid-epoch checkpoint: it becomes `last`, never `best` (there are no validation metrics)."""
        path = self._commit(payload_fn(), epoch, step)
        self._point(self.last_path, path)
        self._prune()
        return path

    def save_epoch(self, payload_fn: Callable[[], dict[str, Any]], metrics: dict[str, float],
                   epoch: int, step: int) -> bool:
        """The end of an epoch: always `last`; also `best` when the monitored metric improved."""
        value = metrics.get(self.monitor)
        improved = is_better(value, self.best, self.mode)
        if improved:  # before the payload is made: the checkpoint records its own best state
            self.best, self.best_epoch = value, epoch
        path = self._commit(payload_fn(), epoch, step)
        self._point(self.last_path, path)
        if improved:
            self._point(self.best_path, path)
        self._prune()
        return improved

    def _commit(self, payload: dict[str, Any], epoch: int, step: int) -> Path:
        # No '=' in the name: Hydra's override grammar would need it quoted in resume=PATH.
        path = self.directory / f"epoch{epoch:03d}-step{step:07d}.ckpt"
        save(path, payload)
        return path

    def _point(self, name: Path, target: Path) -> None:
        """Atomically make `name` the same file as `target` (a hard link; a copy where links fail)."""
        tmp = name.with_name(f".{name.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            try:
                os.link(target, tmp)
            except OSError:
                shutil.copy2(target, tmp)
            os.replace(tmp, name)
            _fsync_dir(name.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CheckpointWriteError(
                f"could not update {name}: {exc.strerror or exc}. {target} is complete and loadable. "
                f"Free disk space or choose a writable output directory (hydra.run.dir)."
            ) from exc

    def _prune(self) -> None:
        numbered = sorted(self.directory.glob("epoch*-step*.ckpt"))  # zero-padded: name order is age order
        for old in numbered[: -self.keep_last_k]:
            old.unlink(missing_ok=True)  # last/best are links of their own: pruning never removes them

    def preflight(self, payload_fn: Callable[[], dict[str, Any]]) -> None:
        """Before the first step: the directory is writable and has room for the checkpoints to come."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.directory) as f:
                f.write(b"0")
        except OSError as exc:
            raise CheckpointError(
                f"cannot write checkpoints to {self.directory}: {exc.strerror or exc}. "
                f"Choose a writable output directory (hydra.run.dir=PATH) or fix its permissions."
            ) from None
        buffer = io.BytesIO()
        torch.save(payload_fn(), buffer)
        size = buffer.tell()
        needed = (self.keep_last_k + 2) * size  # kept files, a separate best, and one being written
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            mb = 1 / 2**20
            raise CheckpointError(
                f"not enough free disk space for checkpoints in {self.directory}: {free * mb:.1f} MiB free, "
                f"about {needed * mb:.1f} MiB needed ({self.keep_last_k + 2} checkpoints of {size * mb:.1f} MiB). "
                f"Free space, lower trainer.keep_last_k, or choose another output directory (hydra.run.dir)."
            )

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, "best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def data_section(meta: DataMeta, examples: Split | None) -> dict[str, Any]:
    """What a checkpoint carries of its data: the metadata (shapes, classes, normalization, kind) and a few
    real samples as stored (where the Trainer was given some)."""
    fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(meta).items()}
    return {"meta": fields, "examples": {"x": examples.x, "y": examples.y} if examples is not None else {}}


def read_data_section(section: dict[str, Any]) -> tuple[DataMeta, Split | None]:
    """The inverse of `data_section` (no examples: None)."""
    fields = dict(section["meta"])
    for key in ("in_shape", "mean", "std", "target_shape"):
        if fields.get(key) is not None:
            fields[key] = tuple(fields[key])
    examples = section.get("examples") or {}
    x = examples.get("x")
    return DataMeta(**fields), Split(x, examples.get("y")) if x is not None else None


def make_payload(config_yaml: str, modules: dict[str, Any], optimization: Any, fit_state: Any,
                 manager: CheckpointManager, data: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a checkpoint carries: its recipe (the resolved config), every state, and versions."""
    from trainkit.version import __version__
    from trainkit.engine.rng import rng_state

    states = {name: m.state_dict() for name, m in modules.items()}
    ema = getattr(optimization, "ema", None)
    if ema is not None:  # "modules" is what eval and export use: the averaged weights
        training, states = states, {name: ema.averages[name].module.state_dict() for name in modules}
    for name, state in states.items():
        floats = {k: v for k, v in state.items() if v.is_floating_point()}
        if not floats:
            continue
        # One host sync per module, not one per tensor: the per-tensor flags come back only when one is bad.
        finite = torch.stack([torch.isfinite(v).all() for v in floats.values()])
        bad = [] if finite.all() else [k for k, ok in zip(floats, finite.tolist()) if not ok]
        if bad:
            from trainkit.engine.loop import NonFiniteLossError

            raise NonFiniteLossError(
                f"the weights of {name} are not finite ({', '.join(bad[:5])}) at step {fit_state.step}: nothing was "
                f"saved. Lower optimizer.lr, set trainer.grad_clip, or use trainer.on_nan=skip."
            )
    return {
        "format": "trainkit",
        "format_version": FORMAT_VERSION,
        "config": config_yaml,
        "data": data,
        "modules": states,
        "optimization": optimization.state_dict(),
        "fit": dataclasses.asdict(fit_state),
        "best": manager.state_dict(),
        "rng": rng_state(),
        "versions": {"trainkit": __version__, "torch": str(torch.__version__)},  # TorchVersion is not a plain str
        **({"training_modules": training} if ema is not None else {}),
        **(extra or {}),
    }


def load_modules(payload: dict[str, Any], modules: dict[str, Any], path: str | Path, key: str = "modules") -> None:
    """Load module weights (`training_modules`: the raw weights of an EMA run, for resuming), or say
    exactly which keys and shapes do not match this model."""
    stored = payload.get(key, {})
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
