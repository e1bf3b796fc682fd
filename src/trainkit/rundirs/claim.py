"""Claiming a run directory (unique, even for two runs started in the same second), locking it to one writer,
and the names of sweep jobs' directories."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trainkit.errors import UserError, os_error_message


class RunDirError(UserError):
    """A run directory that cannot be used: in use, missing, or not resumable."""


def claim(pattern: str, made: list[Path] | None = None) -> str:
    """Create `pattern` as a new directory, or `pattern_1`, `pattern_2`... if taken: two runs started in
    the same second get distinct directories (mkdir is atomic, so exactly one process wins each name). The parent
    folders it had to make (a new date's folder) are added to `made`, so that a refused line removes them again."""
    base = Path(pattern)
    parents = make_dirs(base.parent)
    if made is not None:
        made.extend(parents)
    for n in range(1000):
        candidate = base if n == 0 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
            return str(candidate)
        except FileExistsError:
            continue
        except OSError as exc:
            remove_made(parents)
            raise RunDirError(os_error_message(exc, f"the run directory {candidate}")) from None
    raise RunDirError(f"could not create a new run directory next to {base}: 1000 names are taken.")


def make_dirs(path: Path | str, what: str = "the run directory") -> list[Path]:
    """Create the folder `path` and its missing parents; the folders this made, outermost first (only those may be
    removed again). A file in the way, a name too long or a folder it may not write is a RunDirError that says so."""
    made: list[Path] = []
    try:
        missing: list[Path] = []
        probe = Path(path)
        while not probe.is_dir() and probe != probe.parent:
            missing.append(probe)
            probe = probe.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                if not folder.is_dir():
                    raise
                continue  # another process made it meanwhile: not this one's to remove
            made.append(folder)
    except OSError as exc:
        remove_made(made)
        raise RunDirError(os_error_message(exc, f"{what} {path}")) from None
    return made


def remove_made(folders: list[Path]) -> None:
    """Remove the folders a command made (as make_dirs lists them), innermost first, where they are still empty: a
    folder that something else wrote to meanwhile stays."""
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass


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


def quoted(path: Path | str) -> str:
    """A path as one Hydra override value: job directories have `=` and `,` in their names."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def write_hydra_files(run_dir: Path, cfg: Any, overrides: list[str], job: str) -> None:
    """What Hydra writes in a run's .hydra/ folder and trainkit reads back (trainkit runs, resume=auto, sweeps):
    the composed config, the overrides as given, the job's name and directory."""
    from omegaconf import OmegaConf

    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), folder / "overrides.yaml")
    hydra = {"hydra": {"job": {"name": job.replace(" ", "_")}, "runtime": {"output_dir": str(run_dir.resolve())},
                       "overrides": {"task": list(overrides)}}}
    OmegaConf.save(OmegaConf.create(hydra), folder / "hydra.yaml")
