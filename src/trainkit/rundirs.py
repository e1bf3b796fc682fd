"""Run directories: claiming a unique one, locking it to one writer, and finding the run to resume.

It reads only what runs already write (.hydra/config.yaml, checkpoints/, summary.json): no database.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainkit.errors import UserError

# Keys whose change makes a checkpoint's state meaningless: resuming with them changed is refused.
FIXED_ON_RESUME = ("data", "model", "task", "optimizer.name", "scheduler.name")
NOT_COMPARED = ("resume", "plugins")


class RunDirError(UserError):
    """A run directory that cannot be used: in use, missing, or not resumable."""


def claim(pattern: str) -> str:
    """Create `pattern` as a new directory, or `pattern_1`, `pattern_2`... if taken: two runs started in
    the same second get distinct directories (mkdir is atomic, so exactly one process wins each name)."""
    base = Path(pattern)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        candidate = base if n == 0 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
            return str(candidate)
        except FileExistsError:
            continue
    raise RunDirError(f"could not create a new run directory next to {base}: 1000 names are taken.")


def job_dir_name(num: int, overrides: str) -> str:
    """A sweep job's directory: its number, then its overrides (`3_model=cnn,optimizer=sgd`), so that
    TensorBoard's run names (directories under --logdir) say what each job changed. Path separators in
    values become `_`, and the name is cut to stay well below the file system's 255-byte limit."""
    text = str(overrides).replace(os.sep, "_").replace("\0", "")
    name = f"{num}_{text}" if text else str(num)
    return name.encode()[:200].decode(errors="ignore")


def job_number(job_dir: Path) -> str:
    """The job number a sweep job's directory starts with (`3` for `3_model=cnn`)."""
    return job_dir.name.split("_", 1)[0]


@contextmanager
def lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory while writing to it; a second writer is refused."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirError(
                f"run directory {run_dir} is in use by another trainkit process (pid {owner}); two processes "
                f"never write to one run. Wait for it to end, or start a new run without resume=."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock, also when the process dies


def is_locked(run_dir: Path) -> bool:
    try:
        fd = os.open(run_dir / ".lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every leaf that differs; `resume` itself is not compared."""
    a, b = flatten(old), flatten(new)
    keys = sorted(k for k in set(a) | set(b) if not k.startswith(NOT_COMPARED))
    missing = "<absent>"
    return [(k, a.get(k, missing), b.get(k, missing)) for k in keys if a.get(k, missing) != b.get(k, missing)]


def _fixed(key: str) -> bool:
    return any(key == f or key.startswith(f + ".") for f in FIXED_ON_RESUME)


@dataclass
class Resume:
    run_dir: Path
    checkpoint: Path
    changes: list[tuple[str, Any, Any]]  # allowed differences from the stored config, to report


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def _target(spec: str) -> tuple[Path, Path]:
    path = Path(spec)
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise RunDirError(f"resume={spec}: {ckpt} does not exist, so that run has nothing to resume from.")
        return path, ckpt
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return run_dir, path
    raise RunDirError(f"resume={spec}: no such run directory or checkpoint file. Use a run directory "
                      f"(outputs/<date>/<time>), a .ckpt file, or resume=auto.")


def find_resume(spec: str, cfg: DictConfig, run_dir: Path | None = None, outputs: Path = Path("outputs")) -> Resume | None:
    """The run to continue: `spec` is a run directory, a checkpoint file, or `auto`: this invocation's
    own run directory if it holds an unfinished run (a requeued job: same command, same directory),
    else the newest unfinished run under `outputs` whose stored config equals this one; None if none."""
    current = OmegaConf.to_container(cfg, resolve=True)
    if spec == "auto":
        own = [run_dir / "checkpoints" / "last.ckpt"] if run_dir is not None else []
        candidates = sorted(outputs.glob("*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
        for ckpt in [p for p in own if p.is_file()] + candidates:
            run_dir = ckpt.parent.parent
            if _status(run_dir) == "finished" or is_locked(run_dir):
                continue
            stored = _stored_config(run_dir)
            if stored is not None and not config_diff(stored, current):
                return Resume(run_dir, ckpt, [])
        return None
    run_dir, ckpt = _target(spec)
    return Resume(run_dir, ckpt, [])


def _stored_config(run_dir: Path) -> dict[str, Any] | None:
    try:
        return OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=True)  # type: ignore[return-value]
    except Exception:  # an unreadable or half-written config is not a run to resume
        return None


def check_compatible(resume: Resume, stored_yaml: str, cfg: DictConfig) -> Resume:
    """Refuse a resume whose model/data config changed (with the diff); keep the other changes to report."""
    stored = OmegaConf.to_container(OmegaConf.create(stored_yaml), resolve=True)
    stored.setdefault("task", {"name": "auto"})  # type: ignore[union-attr]  # runs from before tasks had a key
    diff = config_diff(stored, OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    refused = [d for d in diff if _fixed(d[0])]
    if refused:
        lines = "; ".join(f"{k}: {old!r} → {new!r}" for k, old, new in refused)
        hint = _original_overrides(resume.run_dir)
        raise RunDirError(
            f"cannot resume {resume.run_dir} with a different model, data or optimizer config: {lines}. Pass the "
            f"run's original settings{hint} (other keys, e.g. trainer.max_epochs, may change), or start a new run."
        )
    resume.changes = diff
    return resume


def _original_overrides(run_dir: Path) -> str:
    try:
        items = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
    except Exception:
        return ""
    typed = [str(o) for o in items if not str(o).startswith("resume=")]
    return f" (it was started with: {' '.join(typed)})" if typed else ""


def adopt(new_dir: Path, run_dir: Path) -> Path:
    """Continue in `run_dir`: keep this invocation's Hydra files under its .hydra/resumes/ and
    remove the directory Hydra made for it, so one run keeps one directory."""
    if new_dir.resolve() == run_dir.resolve():
        return run_dir
    dest = run_dir / ".hydra" / "resumes" / time.strftime("%Y-%m-%d_%H-%M-%S")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if (new_dir / ".hydra").is_dir():
        shutil.move(str(new_dir / ".hydra"), str(dest))
    shutil.rmtree(new_dir, ignore_errors=True)
    return run_dir
