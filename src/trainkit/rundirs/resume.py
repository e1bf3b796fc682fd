"""Finding the run to continue (`resume=DIR`, a checkpoint, or `auto`), refusing one whose recipe changed, and
folding a resumed invocation's files into the run it continues.

It reads only what runs already write (.hydra/config.yaml, checkpoints/, summary.json): no database.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainkit.logging.text import shown
from trainkit.rundirs import remote
from trainkit.rundirs.claim import RunDirError, is_locked

# Keys whose change makes a checkpoint's state meaningless: resuming with them changed is refused.
FIXED_ON_RESUME = ("data", "model", "task", "optimizer.name", "scheduler.name")
NOT_COMPARED = ("resume", "plugins")


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
    path = remote.staged(spec) if remote.is_url(spec) else Path(spec)  # s3://...: continued in its staging folder
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise RunDirError(f"resume={spec}: {shown(ckpt)} does not exist, so that run has nothing to resume from.")
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
