"""`trainkit train`: find the run to resume, take the run directory's lock, and run the Trainer in it; with
trainer.devices=N, launch N processes that do the same."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console

from trainkit import rundirs
from trainkit.engine import checkpoint, distributed
from trainkit.engine.signals import StopRequest
from trainkit.trainer import ATTACHED, Trainer


def train(cfg: DictConfig, run_dir: Path, console: Console) -> dict[str, Any]:
    distributed.from_slurm()
    distributed.setup()  # a no-op for one process, and when the CLI already joined torchrun's group
    devices = int(cfg.trainer.get("devices", 1))
    if devices > 1 and distributed.world_size() == 1:
        return _launch(cfg, run_dir, console, devices)
    main = distributed.is_main()
    resume = _resume(cfg, run_dir, console) if main and cfg.get("resume") else None
    resume = distributed.agree(resume)
    if resume is not None:
        run_dir = resume.run_dir
    with rundirs.lock(run_dir) if main else nullcontext(), StopRequest() as stop:
        trainer = Trainer(cfg, run_dir, console, callbacks=ATTACHED.get(), resume=resume, stop=stop)
        summary = trainer.run()
    # Leave the process group before the interpreter exits: a gloo group still alive at exit can abort a worker
    # ("terminate called without an active exception") after the run has finished and saved.
    distributed.teardown()
    return summary


def _resume(cfg: DictConfig, run_dir: Path, console: Console) -> rundirs.Resume | None:
    resume = rundirs.find_resume(str(cfg.resume), cfg, run_dir)
    if resume is None:
        console.print("resume=auto: no unfinished run with this config under outputs/; starting a new run.")
        return None
    resume = rundirs.check_compatible(resume, checkpoint.load(resume.checkpoint)["config"], cfg)
    rundirs.adopt(run_dir, resume.run_dir)
    return resume


def _launch(cfg: DictConfig, run_dir: Path, console: Console, devices: int) -> dict[str, Any]:
    """`trainer.devices=N`: the same command in N processes (torch elastic launch) sharing this run directory."""
    from hydra.core.hydra_config import HydraConfig

    console.print(f"data-parallel: {devices} processes, global batch {devices} × {cfg.data.batch_size} = "
                  f"{devices * cfg.data.batch_size}")
    code = distributed.launch(devices, [*HydraConfig.get().overrides.task, f"hydra.run.dir={run_dir}"])
    if code:
        raise SystemExit(code)  # the processes already said why (130/143: stopped and saved)
    summary = run_dir / "summary.json"  # rank 0 wrote it (a resumed run writes in the run it continued)
    return json.loads(summary.read_text()) if summary.is_file() else {}
