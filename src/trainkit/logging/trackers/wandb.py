"""`logger=wandb`: one Weights & Biases run per trainkit run, its files in the run's wandb/ directory; offline unless an
API key is configured. Needs the `wandb` extra: pip install "trainkit[wandb]"."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from trainkit.logging.trackers import STATUS, TrackerError, TrackerRun, finite, results
from trainkit.registry import register_tracker


def wandb_online() -> bool:
    """An API key configured (WANDB_API_KEY, or `wandb login`'s netrc entry): then W&B syncs; else offline."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


@register_tracker("wandb")
class WandbTracker:
    """One W&B run per trainkit run, its files in the run's wandb/ directory; a sweep's jobs share a group."""

    requires = ("wandb", "wandb")

    def __init__(self, run: TrackerRun, project: str = "trainkit", entity: str | None = None,
                 timeout_s: float = 30.0) -> None:
        import wandb

        number = isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
        if not number or not 0 < timeout_s < float("inf"):
            raise TrackerError(f"logger.wandb.timeout_s={timeout_s} must be a number of seconds above 0, e.g. 30: how "
                               f"long W&B may take to start its run (its own default waits 90 s).")
        run_dir, params, sweep, overrides, run_id = run.run_dir, run.params, run.sweep, run.overrides, run.run_id

        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_online() else "offline")
        try:
            self.run = wandb.init(project=project or "trainkit", entity=entity,
                                  dir=str(run_dir), id=run_id, resume="allow" if run_id else None, group=sweep,
                                  name=run_dir.name, config=params, tags=overrides[:64] or None, mode=mode,
                                  reinit="create_new",
                                  settings=wandb.Settings(console="off", silent=True, init_timeout=float(timeout_s)))
        except Exception as exc:  # wandb raises its own errors (network, auth) from deep inside
            raise TrackerError(f"logger=wandb: W&B could not start a run ({' '.join(str(exc).split())[:200]}). "
                               f"Check logger.wandb.project/entity and your API key, or run offline with "
                               f"WANDB_MODE=offline (logger.wandb.timeout_s={timeout_s} s to start).") from None
        self.run_id = self.run.id

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(finite(metrics), step=step)

    def image(self, tag: str, image: Any, step: int) -> None:
        """Pictures go to W&B as files at the end (finish): the PNG files of the run directory."""

    def flush(self) -> None:
        """wandb buffers and syncs by itself."""

    def finish(self, summary: dict[str, Any], pictures: list[Path]) -> None:
        self.run.summary.update(results(summary))
        best = (summary.get("checkpoints") or {}).get("best")
        if best and Path(best).is_file():
            self.run.summary["best_checkpoint"] = str(Path(best).resolve())
        for picture in pictures:
            self.run.save(str(picture), base_path=str(self.run_dir), policy="now")
        self.end(str(summary.get("status", "finished")))

    def end(self, status: str) -> None:
        self.run.finish(exit_code=STATUS.get(status, ("FAILED", 1))[1])
