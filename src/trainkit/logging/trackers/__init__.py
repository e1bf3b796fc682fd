"""Experiment trackers, chosen with `logger=` (several at once: `logger=[tensorboard,mlflow]`): each gets the run's
config as params, its `split/name` metrics per step and per epoch, its pictures, and its final, best and test metrics.

One file each (tensorboard.py, csv.py, mlflow.py, wandb.py), registered by name (`trainkit.register_tracker`); a
tracker of your own is one file in a plugin, and its options are `logger.<name>.*`. The Trainer talks to them through
`Trackers`, the RunLogger sends them what it logs. metrics.csv and summary.json are not trackers: every run writes
them. A tracker run's id travels in the checkpoint, so a resumed run continues the same tracker run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from trainkit.errors import UserError

STATUS = {"finished": ("FINISHED", 0), "interrupted": ("KILLED", 1), "failed": ("FAILED", 1)}


class TrackerError(UserError):
    """A tracker that cannot be reached or refuses what it is given."""


@dataclass
class TrackerRun:
    """What a tracker is opened with, besides its own `logger.<name>.*` options."""

    run_dir: Path
    params: dict[str, Any] = field(default_factory=dict)  # the run's config, flattened: {"optimizer.lr": 0.001, ...}
    overrides: list[str] = field(default_factory=list)  # as typed on the command line (tags, labels)
    sweep: str | None = None  # a sweep job: its sweep directory's name (a group of runs), else None
    run_id: str | None = None  # resuming: the tracker run's id the checkpoint carries
    resume_step: int | None = None  # resuming: the checkpoint's step; what a killed process logged after it is dropped


class Tracker(Protocol):
    """One tracker run per trainkit run. Constructed as `cls(run: TrackerRun, **options)`; `requires`, if set, is
    (module, extra): the client library it needs and trainkit's optional extra that installs it."""

    run_id: str  # kept in checkpoints, so that a resumed run continues this tracker run

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        """`split/name` values at an optimizer step (train/ every trainer.log_every_n_steps, the epoch's row)."""

    def image(self, tag: str, image: Tensor, step: int) -> None:
        """A picture, C×H×W floats in [0, 1] (the first training batch, a GAN's samples each epoch)."""

    def flush(self) -> None:
        """Write out what is buffered (after each epoch)."""

    def finish(self, summary: dict[str, Any], pictures: list[Path]) -> None:
        """The run ended: its summary.json and the pictures in its directory; then close the tracker run."""

    def end(self, status: str) -> None:
        """The run stopped without a summary (interrupted, failed): close the tracker run with that status."""


TRACKER_METHODS = ("metrics", "image", "flush", "finish", "end")


class Trackers:
    """Every chosen tracker behind one object: what the Trainer and the RunLogger talk to. What a plugin's tracker
    raises becomes a PluginError that names it and its line."""

    def __init__(self, trackers: dict[str, Tracker]) -> None:
        self.trackers = trackers

    def ids(self) -> dict[str, str]:
        """{tracker name: run id}, for the checkpoint."""
        return {name: t.run_id for name, t in self.trackers.items()}

    def _each(self, method: str, *args: Any) -> None:
        from trainkit import registry

        for name, tracker in self.trackers.items():
            try:
                getattr(tracker, method)(*args)
            except UserError:
                raise
            except Exception as exc:
                entry = registry.TRACKERS.entries.get(name)
                if entry is None or not entry.plugin:
                    raise
                raise registry.plugin_fault(entry, f"running its {method}()", exc) from None

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        self._each("metrics", step, metrics)

    def image(self, tag: str, image: Tensor, step: int) -> None:
        self._each("image", tag, image, step)

    def flush(self) -> None:
        self._each("flush")

    def finish(self, summary: dict[str, Any], run_dir: Path) -> None:
        """The run's final, best and test metrics and its pictures; then each tracker run is closed."""
        pictures = sorted(p for p in Path(run_dir).rglob("*.png") if "wandb" not in p.parts and "mlruns" not in p.parts)
        try:
            self._each("finish", summary, pictures)
        finally:
            self.trackers = {}

    def end(self, status: str) -> None:
        """Closed without a summary: the run was interrupted or failed. Best effort: a tracker that cannot close (its
        server gone, a plugin's bug) is a warning in the log, never an error that hides why the run stopped."""
        import logging

        trackers, self.trackers = self.trackers, {}
        for name, tracker in trackers.items():
            try:
                Trackers({name: tracker})._each("end", status)
            except Exception as exc:  # noqa: BLE001 (closing after a failure: the first error is the one to show)
                logging.getLogger("trainkit").warning("logger=%s could not close its run: %s", name, exc)


def open_trackers(chosen: dict[str, dict[str, Any]], run: TrackerRun, resume_ids: dict[str, str] | None = None) -> Trackers:
    """Start (or, with `resume_ids` from a checkpoint, continue) each tracker in `chosen` ({name: its options}).
    Every chosen tracker's client library is checked first, so a missing one fails before any tracker run starts."""
    from dataclasses import replace

    from trainkit import registry
    from trainkit.extras import require_module

    entries = {name: registry.TRACKERS.get(name) for name in chosen}
    classes = {name: entry.load() for name, entry in entries.items()}
    for name, cls in classes.items():
        module, extra = getattr(cls, "requires", (None, None))
        if module:
            require_module(module, f"logger={name}", extra)
    opened: dict[str, Tracker] = {}
    try:
        for name, cls in classes.items():
            given = {"run": replace(run, run_id=(resume_ids or {}).get(name))}
            opened[name] = _opened(entries[name], cls, dict(chosen[name] or {}), given)
    except BaseException:
        Trackers(opened).end("failed")
        raise
    return Trackers(opened)


def _opened(entry: Any, cls: Any, options: dict[str, Any], given: dict[str, Any]) -> Tracker:
    """One tracker, started; a plugin's tracker that fails to start, or starts without a run_id, names itself."""
    from trainkit import registry

    name = entry.name
    try:
        tracker = registry.call_with(cls, options, f"logger.{name}", f"logger={name}", given=given)
    except UserError:
        raise
    except (Exception, SystemExit) as exc:
        if not entry.plugin:
            raise
        raise registry.plugin_fault(entry, "starting its run", exc) from None
    missing = [m for m in TRACKER_METHODS if not callable(getattr(tracker, m, None))]
    if entry.plugin and missing:
        raise registry.PluginError(f"{entry.described} made a {type(tracker).__name__} without "
                                   f"{', '.join(missing)}: a tracker has the methods of "
                                   f"trainkit.logging.trackers.Tracker (docs/extending.md, 'Experiment trackers').")
    if entry.plugin and not isinstance(getattr(tracker, "run_id", None), str):
        raise registry.PluginError(f"{entry.described} started without a run_id (a string the checkpoint keeps, so "
                                   f"that a resumed run continues the same tracker run): set self.run_id in its "
                                   f"constructor.")
    return tracker


def finite(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers among `metrics`, as floats (booleans and None left out)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def results(summary: dict[str, Any]) -> dict[str, float]:
    """What a run ends with, beside its history: best/<metric> (the best epoch's row), the test metrics, and the
    monitored metric's best as best/value."""
    out = {f"best/{k}": v for k, v in finite(summary.get("best") or {}).items() if k not in ("epoch", "step")}
    out.update(finite(summary.get("test") or {}))
    if isinstance(summary.get("best_value"), (int, float)) and math.isfinite(summary["best_value"]):
        out["best/value"] = float(summary["best_value"])
    return out
