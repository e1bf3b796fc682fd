"""`logger=mlflow`: one MLflow run per trainkit run, on a local SQLite store (mlruns/ beside outputs/) or a tracking
server (logger.mlflow.tracking_uri). Needs the `mlflow` extra: pip install "trainkit[mlflow]".

Every request to a server is bounded: MLflow's own defaults wait 120 s per request and retry 7 times with a growing
back-off (minutes, for a server that refuses connections); trainkit gives each request logger.mlflow.timeout_s and
logger.mlflow.retries, through MLflow's MLFLOW_HTTP_REQUEST_TIMEOUT and MLFLOW_HTTP_REQUEST_MAX_RETRIES, set only
while it talks to MLflow."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainkit.logging.trackers import STATUS, TrackerError, TrackerRun, finite, results
from trainkit.registry import register_tracker


def default_mlflow_store(run_dir: Path) -> Path:
    """mlruns/ beside the outputs/ directory that holds the run (else beside the run directory): MLflow's SQLite
    store mlruns/mlflow.db and the artifacts in mlruns/artifacts/ (MLflow 3 refuses its old file store)."""
    resolved = Path(run_dir).resolve()
    outputs = next((p for p in resolved.parents if p.name == "outputs"), None)
    return (outputs.parent if outputs is not None else resolved.parent) / "mlruns"


@register_tracker("mlflow")
class MLflowTracker:
    """One MLflow run per trainkit run, through MlflowClient (no global active run, so jobs in one process never
    mix). Experiment: logger.mlflow.experiment, or `<experiment>/<sweep directory>` for a sweep's jobs."""

    requires = ("mlflow", "mlflow")

    def __init__(self, run: TrackerRun, tracking_uri: str | None = None, experiment: str = "trainkit",
                 timeout_s: float = 10.0, retries: int = 2) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self.limits = _limits(timeout_s, retries)
        run_dir = run.run_dir
        local = None if tracking_uri else default_mlflow_store(run_dir)
        if local is not None:
            local.mkdir(parents=True, exist_ok=True)
        self.uri = str(tracking_uri or f"sqlite:///{local / 'mlflow.db'}")
        experiment = str(experiment or "trainkit")
        self.run_dir = run_dir
        try:
            with self.bounded():
                self._start(MlflowClient, run, experiment, local)
        except MlflowException as exc:
            raise TrackerError(f"logger=mlflow: the tracking server at {self.uri} refused the run "
                               f"({' '.join(str(exc).split())[:200]}). Check logger.mlflow.tracking_uri, or start "
                               f"the server (mlflow server --backend-store-uri sqlite:///mlflow.db); each request "
                               f"waits logger.mlflow.timeout_s={timeout_s} s, logger.mlflow.retries={retries} "
                               f"times.") from None

    @contextlib.contextmanager
    def bounded(self) -> Iterator[None]:
        """MLflow's requests, bounded by logger.mlflow.timeout_s and .retries, while this block runs (MLflow reads
        its MLFLOW_HTTP_REQUEST_* variables at each request); the environment as it was afterwards."""
        saved = {k: os.environ.get(k) for k in self.limits}
        os.environ.update(self.limits)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A client call during the run: bounded, and a server that stops answering is trainkit's TrackerError."""
        from mlflow.exceptions import MlflowException

        try:
            with self.bounded():
                return fn(*args, **kwargs)
        except MlflowException as exc:
            raise TrackerError(f"logger=mlflow: the tracking server at {self.uri} stopped answering "
                               f"({' '.join(str(exc).split())[:200]}). The checkpoints are saved: continue the run "
                               f"with resume= once the server is back.") from None

    def _start(self, client_class: Any, run: TrackerRun, experiment: str, local: Path | None) -> None:
        """A new MLflow run (or, resuming, the checkpoint's own), with the run's params."""
        run_dir, sweep, overrides, run_id = run.run_dir, run.sweep, run.overrides, run.run_id
        self.client = client_class(tracking_uri=self.uri)
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
        self._params({k: v for k, v in run.params.items() if k not in logged})  # MLflow's params are write-once

    def _params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])  # inside bounded() (the constructor)

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in finite(metrics).items()]
        for i in range(0, len(batch), 1000):
            self._call(self.client.log_batch, self.run_id, metrics=batch[i:i + 1000])

    def finish(self, summary: dict[str, Any], pictures: list[Path]) -> None:
        self.metrics(int(summary.get("steps") or 0), results(summary))
        best = (summary.get("checkpoints") or {}).get("best")
        if best and Path(best).is_file():
            self._call(self.client.set_tag, self.run_id, "trainkit.best_checkpoint", str(Path(best).resolve()))
        for picture in pictures:
            folder = picture.parent.relative_to(self.run_dir).as_posix()
            self._call(self.client.log_artifact, self.run_id, str(picture), None if folder == "." else folder)
        self.end(str(summary.get("status", "finished")))

    def end(self, status: str) -> None:
        self._call(self.client.set_terminated, self.run_id, STATUS.get(status, ("FAILED", 1))[0])

    def image(self, tag: str, image: Any, step: int) -> None:
        """Pictures go to MLflow as artifacts at the end (finish): the PNG files of the run directory."""

    def flush(self) -> None:
        """Every metric is sent as it comes."""


def _limits(timeout_s: Any, retries: Any) -> dict[str, str]:
    """MLflow's request settings for logger.mlflow.timeout_s and .retries (MLflow takes whole seconds)."""
    number = isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
    if not number or not math.isfinite(timeout_s) or timeout_s <= 0:
        raise TrackerError(f"logger.mlflow.timeout_s={timeout_s} must be a number of seconds above 0, e.g. 10: how "
                           f"long each request to the tracking server may take.")
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 20:
        raise TrackerError(f"logger.mlflow.retries={retries} must be a whole number from 0 to 20: how often a failed "
                           f"request to the tracking server is tried again.")
    return {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout_s))),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
