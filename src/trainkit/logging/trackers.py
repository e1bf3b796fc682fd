"""Experiment trackers (`logger=mlflow`, `logger=wandb`, several at once): each gets a run's config as params, its
`split/name` metrics per step and per epoch, its final, best and test metrics, and its pictures.

Plain dicts in, each tracker's own client library out (imported only when that tracker is chosen). The Trainer
decides what to send and when; metrics.csv, summary.json and TensorBoard are not trackers and stay where they are.
A tracker run's id travels in the checkpoint, so a resumed run continues the same tracker run.
"""

from __future__ import annotations

import math
import netrc
import os
import time
from pathlib import Path
from typing import Any, Protocol

from trainkit.errors import UserError

TRACKERS = ("mlflow", "wandb")  # tensorboard is the RunLogger's own, switched by trainer.tensorboard too
STATUS = {"finished": ("FINISHED", 0), "interrupted": ("KILLED", 1), "failed": ("FAILED", 1)}


class TrackerError(UserError):
    """A tracker that cannot be reached or refuses what it is given."""


class Tracker(Protocol):
    run_id: str

    def metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def finish(self, summary: dict[str, Any], pictures: list[Path]) -> None: ...
    def end(self, status: str) -> None: ...


def names(logger: dict[str, Any]) -> list[str]:
    """The trackers a `logger` config section chooses (its keys), TensorBoard aside."""
    return [name for name in logger if name in TRACKERS]


class Trackers:
    """Every chosen tracker behind one object: what the Trainer and the RunLogger talk to."""

    def __init__(self, trackers: dict[str, Tracker]) -> None:
        self.trackers = trackers

    def ids(self) -> dict[str, str]:
        """{tracker name: run id}, for the checkpoint."""
        return {name: t.run_id for name, t in self.trackers.items()}

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        for tracker in self.trackers.values():
            tracker.metrics(step, metrics)

    def finish(self, summary: dict[str, Any], run_dir: Path) -> None:
        """The run's final, best and test metrics and its pictures; then the tracker run is closed."""
        pictures = sorted(p for p in Path(run_dir).rglob("*.png") if "wandb" not in p.parts and "mlruns" not in p.parts)
        for tracker in self.trackers.values():
            tracker.finish(summary, pictures)
        self.trackers = {}

    def end(self, status: str) -> None:
        """Closed without a summary: the run was interrupted or failed."""
        for tracker in self.trackers.values():
            tracker.end(status)
        self.trackers = {}


def open_trackers(logger: dict[str, Any], run_dir: Path, params: dict[str, Any],
                  resume_ids: dict[str, str] | None = None) -> Trackers:
    """Start (or, with `resume_ids` from a checkpoint, continue) each tracker that `logger` names. A sweep job (its
    parent directory holds Hydra's multirun.yaml) is grouped by its sweep and tagged with its overrides."""
    run_dir = Path(run_dir)
    chosen = names(logger)
    require(chosen)
    sweep = run_dir.parent.name if (run_dir.parent / "multirun.yaml").is_file() else None
    context = {"run_dir": run_dir, "params": params, "sweep": sweep, "overrides": _overrides(run_dir)}
    opened: dict[str, Tracker] = {}
    for name in chosen:
        opener = MLflowTracker if name == "mlflow" else WandbTracker
        opened[name] = opener(dict(logger[name] or {}), run_id=(resume_ids or {}).get(name), **context)
    return Trackers(opened)


def require(chosen: list[str]) -> None:
    from trainkit.extras import require_tracker

    for name in chosen:
        require_tracker(name)


def _overrides(run_dir: Path) -> list[str]:
    from trainkit.commands.runs import overrides_of

    return [o for o in overrides_of(run_dir) if not o.startswith(("resume=", "hydra."))]


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _results(summary: dict[str, Any]) -> dict[str, float]:
    """What a run ends with, beside its history: best/<metric> (the best epoch's row), the test metrics, and the
    monitored metric's best as best/value."""
    out = {f"best/{k}": v for k, v in _finite(summary.get("best") or {}).items() if k not in ("epoch", "step")}
    out.update(_finite(summary.get("test") or {}))
    if isinstance(summary.get("best_value"), (int, float)) and math.isfinite(summary["best_value"]):
        out["best/value"] = float(summary["best_value"])
    return out


def default_mlflow_store(run_dir: Path) -> Path:
    """mlruns/ beside the outputs/ directory that holds the run (else beside the run directory): MLflow's SQLite
    store mlruns/mlflow.db and the artifacts in mlruns/artifacts/ (MLflow 3 refuses its old file store)."""
    resolved = Path(run_dir).resolve()
    outputs = next((p for p in resolved.parents if p.name == "outputs"), None)
    return (outputs.parent if outputs is not None else resolved.parent) / "mlruns"


class MLflowTracker:
    """One MLflow run per trainkit run, through MlflowClient (no global active run, so jobs in one process never
    mix). Experiment: logger.mlflow.experiment, or `<experiment>/<sweep directory>` for a sweep's jobs."""

    def __init__(self, options: dict[str, Any], run_dir: Path, params: dict[str, Any], sweep: str | None,
                 overrides: list[str], run_id: str | None = None) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        local = None if options.get("tracking_uri") else default_mlflow_store(run_dir)
        if local is not None:
            local.mkdir(parents=True, exist_ok=True)
        self.uri = str(options.get("tracking_uri") or f"sqlite:///{local / 'mlflow.db'}")
        experiment = str(options.get("experiment") or "trainkit")
        self.run_dir = run_dir
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            if run_id:
                self.client.update_run(run_id, status="RUNNING")
                logged = self.client.get_run(run_id).data.params
            else:
                name = f"{experiment}/{sweep}" if sweep else experiment
                found = self.client.get_experiment_by_name(name)
                artifacts = (local / "artifacts").as_uri() if local is not None else None  # else the server's choice
                experiment_id = found.experiment_id if found else self.client.create_experiment(name, artifacts)
                tags = {"trainkit.run_dir": str(run_dir), "trainkit.overrides": " ".join(overrides)}
                tags.update({f"override.{k}": v for k, _, v in (o.lstrip("+~").partition("=") for o in overrides)})
                run_id = self.client.create_run(experiment_id, run_name=run_dir.name, tags=tags).info.run_id
                logged = {}
            self.run_id = run_id
            self._params({k: v for k, v in params.items() if k not in logged})  # MLflow's params are write-once
        except MlflowException as exc:
            raise TrackerError(f"logger=mlflow: the tracking server at {self.uri} refused the run "
                               f"({' '.join(str(exc).split())[:200]}). Check logger.mlflow.tracking_uri, or start "
                               f"the server (mlflow server --backend-store-uri sqlite:///mlflow.db).") from None

    def _params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in _finite(metrics).items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def finish(self, summary: dict[str, Any], pictures: list[Path]) -> None:
        self.metrics(int(summary.get("steps") or 0), _results(summary))
        best = (summary.get("checkpoints") or {}).get("best")
        if best and Path(best).is_file():
            self.client.set_tag(self.run_id, "trainkit.best_checkpoint", str(Path(best).resolve()))
        for picture in pictures:
            folder = picture.parent.relative_to(self.run_dir).as_posix()
            self.client.log_artifact(self.run_id, str(picture), None if folder == "." else folder)
        self.end(str(summary.get("status", "finished")))

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, STATUS.get(status, ("FAILED", 1))[0])


def wandb_online() -> bool:
    """An API key configured (WANDB_API_KEY, or `wandb login`'s netrc entry): then W&B syncs; else offline."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker:
    """One W&B run per trainkit run, its files in the run's wandb/ directory; a sweep's jobs share a group."""

    def __init__(self, options: dict[str, Any], run_dir: Path, params: dict[str, Any], sweep: str | None,
                 overrides: list[str], run_id: str | None = None) -> None:
        import wandb

        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_online() else "offline")
        try:
            self.run = wandb.init(project=options.get("project") or "trainkit", entity=options.get("entity"),
                                  dir=str(run_dir), id=run_id, resume="allow" if run_id else None, group=sweep,
                                  name=run_dir.name, config=params, tags=overrides[:64] or None, mode=mode,
                                  reinit="create_new", settings=wandb.Settings(console="off", silent=True))
        except Exception as exc:  # wandb raises its own errors (network, auth) from deep inside
            raise TrackerError(f"logger=wandb: W&B could not start a run ({' '.join(str(exc).split())[:200]}). "
                               f"Check logger.wandb.project/entity and your API key, or run offline with "
                               f"WANDB_MODE=offline.") from None
        self.run_id = self.run.id

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(_finite(metrics), step=step)

    def finish(self, summary: dict[str, Any], pictures: list[Path]) -> None:
        self.run.summary.update(_results(summary))
        best = (summary.get("checkpoints") or {}).get("best")
        if best and Path(best).is_file():
            self.run.summary["best_checkpoint"] = str(Path(best).resolve())
        for picture in pictures:
            self.run.save(str(picture), base_path=str(self.run_dir), policy="now")
        self.end(str(summary.get("status", "finished")))

    def end(self, status: str) -> None:
        self.run.finish(exit_code=STATUS.get(status, ("FAILED", 1))[1])
