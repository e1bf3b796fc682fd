"""The Trainer: built objects in (a task with its modules, the data's loaders, the optimization, the settings, a run
directory, callbacks, trackers), a trained run out: checkpoints, metrics, logs and summary.json. It never sees a config.

trainkit.build.build_trainer makes one from a composed config (`trainkit train`, `trainkit.train`, benchmarks/), and
trainkit.make_trainer from keyword arguments. Outside code watches or times a run through callbacks (`Callback`),
never by replacing trainkit functions. The loop itself (engine/loop.py) stays generic: the Trainer only wires it to
checkpoints, logging and the callbacks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from trainkit.data.base import DataMeta, Split
from trainkit.engine import checkpoint, distributed
from trainkit.engine.loop import FitState, Hooks, Loader, evaluate, fit
from trainkit.engine.optimization import Optimization
from trainkit.engine.rng import set_rng_state
from trainkit.engine.settings import TrainerSettings
from trainkit.engine.signals import Interrupted, StopRequest
from trainkit.errors import UserError
from trainkit.logging.run_logger import RunLogger, SilentLogger
from trainkit.logging.text import number, shown
from trainkit.tasks.base import Task

if TYPE_CHECKING:
    from trainkit.logging.trackers import Trackers

EVENTS = ("fit_start", "epoch_start", "step_end", "validation_start", "validation_end", "checkpoint_start",
          "checkpoint_end", "epoch_end", "fit_end", "test_end")


class Callback:
    """Outside code attached to a Trainer. Override what you need; each method gets the trainer first
    (`trainer.state` has the counters and history, `trainer.task` the modules, `trainer.run_dir` the run)."""

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_step_end(self, trainer: Trainer, step: int, metrics: dict[str, float] | None) -> None:
        """After every optimizer iteration; `metrics` (train/loss, ...) every trainer.log_every_n_steps, else
        None: reading them syncs with the device, so they are only read that often."""

    def on_validation_start(self, trainer: Trainer) -> None: ...
    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...
    def on_checkpoint_start(self, trainer: Trainer) -> None: ...
    def on_checkpoint_end(self, trainer: Trainer) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        """After validation, the checkpoint and the epoch's logs: `metrics` is its metrics.csv row."""

    def on_fit_end(self, trainer: Trainer) -> None: ...
    def on_test_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...


@dataclass
class TrainingData:
    """What a Trainer trains, validates and tests on: batch loaders of the splits (data/loader.py), and the
    description of the data that its checkpoints carry."""

    meta: DataMeta
    train: Loader
    val: Loader
    test: Loader | None = None  # None: no labelled test split, so `test()` gives {}
    examples: Split | None = None  # a few samples as stored (checkpoints carry them; a GAN draws over them)
    warnings: list[str] = field(default_factory=list)  # what the data check found, kept in summary.json


@dataclass
class Recipe:
    """What a checkpoint needs to build its run again (eval, predict, export, `trainkit.load`, resume)."""

    config: str  # the run's config as YAML: data, model, task, optimizer, scheduler, trainer, seed
    plugins: dict[str, str] = field(default_factory=dict)  # {kind: module} of components that plugins registered


class _Events:
    """Calls `on_<event>(trainer, ...)` of every callback that overrides it: nothing at all for the others."""

    def __init__(self, trainer: Trainer, callbacks: Iterable[Callback]) -> None:
        callbacks = list(callbacks)
        wrong = [cb for cb in callbacks if not isinstance(cb, Callback)]
        if wrong:
            raise UserError(f"callbacks: {type(wrong[0]).__name__} is not a trainkit.trainer.Callback; subclass it "
                            f"(class MyCallback(trainkit.Callback): ...) and override the on_* methods you need.")
        self.handlers = {
            name: [getattr(cb, f"on_{name}") for cb in callbacks
                   if getattr(type(cb), f"on_{name}", None) is not getattr(Callback, f"on_{name}")]
            for name in EVENTS
        }
        self.trainer = trainer

    def __call__(self, name: str, *args: Any) -> None:
        for handler in self.handlers[name]:
            handler(self.trainer, *args)


class Trainer:
    """One training run of built objects: `fit()`, `test()`, or `run()` for both with the summary.

    `recipe`: what checkpoints carry to build the run again (without it they hold weights and states only, and
    `trainkit eval` cannot rebuild them). `resume`: a checkpoint of this run to continue from (a path, or one
    already read: engine.checkpoint.Saved). `stop`: the signal watcher (engine.signals.StopRequest) that makes the
    loop save and stop. `trackers`: where metrics and pictures go besides metrics.csv (logging/trackers)."""

    def __init__(self, task: Task, data: TrainingData, optimization: Optimization, settings: TrainerSettings,
                 run_dir: str | Path, *, callbacks: Iterable[Callback] = (), trackers: Trackers | None = None,
                 recipe: Recipe | None = None, resume: checkpoint.Saved | str | Path | None = None,
                 stop: StopRequest | None = None, console: Console | None = None) -> None:
        self.started = time.perf_counter()
        self.task, self.data, self.opt, self.settings = task, data, optimization, settings
        self.run_dir = Path(run_dir)
        self.main = distributed.is_main()  # only rank 0 writes: logs, metrics, checkpoints, summary
        self.console = console if console is not None and self.main else Console(quiet=True)
        self.events = _Events(self, callbacks)
        self.recipe, self.stop = recipe, stop
        self.trackers = trackers if self.main else None  # rank 0 alone reports
        self.manager = checkpoint.CheckpointManager(self.run_dir / "checkpoints", task.monitor, task.monitor_mode,
                                                    settings.keep_last_k)
        self.state = FitState()
        self._drawn: Future[Any] | None = None  # the inputs picture, drawn by a thread during the first epoch
        self._data = checkpoint.data_section(data.meta, data.examples)
        saved = checkpoint.Saved.read(resume) if resume is not None and not isinstance(resume, checkpoint.Saved) \
            else resume
        # Saving: debug runs and ranks > 0 write nothing; but every rank takes part in a mid-epoch save's gather.
        saving = settings.enable_checkpointing
        if saved is not None:
            self.state = self._restore(saved)
            self.console.print(f"resuming [bold]{shown(self.run_dir)}[/bold] at epoch {self.state.epoch + 1}, batch "
                               f"{self.state.batch} (step {self.state.step})")
        else:
            if saving and self.main:
                self.manager.preflight(self._payload)
            self.console.print(f"run directory: [bold]{shown(self.run_dir)}[/bold]  ({data.meta.name}, "
                               f"{data.train.num_samples} train / {data.val.num_samples} val samples, device "
                               f"{_device(task)}, precision {settings.precision})")
        if distributed.world_size() > 1:
            self.console.print(f"data-parallel: {distributed.world_size()} processes, global batch "
                               f"{distributed.world_size()} × {data.train.batch_size}")
        stop_requested = (lambda: distributed.any_rank(stop.requested)) if stop is not None else (lambda: None)
        self.hooks = Hooks(save_epoch=self._save_epoch if saving and self.main else (lambda metrics: None),
                           save_step=self._save_step if saving else (lambda: None),
                           stop_requested=stop_requested, event=self.events)  # every rank stops after the same step
        self.logger = RunLogger(self.run_dir, self.console, settings.max_epochs, progress=settings.progress,
                                plain_every_s=settings.plain_every_s, batch_size=data.train.batch_size,
                                history=self.state.history, trackers=self.trackers) if self.main else SilentLogger()
        if saved is not None:
            set_rng_state(saved.payload["rng"])  # last: building the model drew from the generators

    # --- what the loop calls ------------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        trackers = {"trackers": self.trackers.ids()} if self.trackers is not None else {}  # a resume continues them
        recipe = self.recipe or Recipe("")
        return checkpoint.make_payload(recipe.config, self.task.modules(), self.opt, self.state, self.manager,
                                       self._data, extra={**trackers, "plugins": recipe.plugins})

    def _save_epoch(self, metrics: dict[str, float]) -> None:
        self.events("checkpoint_start")
        self.manager.save_epoch(self._payload, metrics, self.state.epoch, self.state.step)
        self.events("checkpoint_end")

    def _save_step(self) -> None:
        """A mid-epoch checkpoint. Each rank sums the metrics of its own samples, and rank 0 alone writes: the
        checkpoint carries every rank's sums so far (`partial["ranks"]`), so a resumed epoch's train/ metrics are
        those of an uninterrupted one. The loop calls this on every rank after the same step."""
        state = self.state
        own = state.partial
        if distributed.world_size() > 1:
            state.partial = {**own, "ranks": distributed.gather(own)}
        try:
            if self.main:
                self.events("checkpoint_start")
                self.manager.save_step(self._payload, state.epoch + 1, state.step)
                self.events("checkpoint_end")
        finally:
            state.partial = own

    def _restore(self, saved: checkpoint.Saved) -> FitState:
        payload = saved.payload
        key = "training_modules" if "training_modules" in payload else "modules"
        checkpoint.load_modules(payload, self.task.modules(), saved.path, key)
        try:
            self.opt.load_state_dict(payload["optimization"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise checkpoint.CheckpointError(
                f"the optimizer/scheduler state in {saved.path} does not fit this run's optimizer config "
                f"({' '.join(str(exc).split())[:200]})."
            ) from None
        self.manager.load_state_dict(payload["best"])
        state = FitState(**payload["fit"])
        ranks = state.partial.get("ranks")
        if ranks is not None:  # a data-parallel run's mid-epoch checkpoint: this rank's own sums
            state.partial = ranks[distributed.rank()] if len(ranks) == distributed.world_size() else {}
        return state

    # --- the run ------------------------------------------------------------------------------------------
    def fit(self, epochs: int | None = None) -> FitState:
        """Train until `epochs` epochs are complete (default trainer.max_epochs), from wherever the state is:
        a fresh run, a resumed one, or an earlier `fit` call. A run that stops on an error or a signal writes
        summary.json saying so before the error goes on."""
        if self.state.step == 0 and self.state.batch == 0:
            self._preview_inputs()
        self.events("fit_start")
        try:
            fit(self.task, self.data.train, self.data.val, self.opt, self.logger, self.settings, self.hooks,
                self.state, until=epochs)
        except UserError as exc:  # interrupted, diverged, a failed save: say so where `trainkit runs` looks
            if isinstance(exc, Interrupted):
                exc.args = (f"{exc} Continue it with: trainkit train {resume_arg(self.run_dir)}",)
            if self.main:
                status = "interrupted" if isinstance(exc, Interrupted) else "failed"
                write_summary(self.run_dir, {**self.summary({}), "status": status, "error": str(exc)})
                if self.trackers is not None:
                    self.trackers.end(status)
            self.close()
            raise
        self.events("fit_end")
        return self.state

    def _preview_inputs(self) -> None:
        """The seed tutorial's first picture: the first training batch as the model will see it (augmented, not
        yet normalized), captioned with its labels: inputs.png in the run directory and in the trackers.

        Drawing and saving it took 0.1-0.3 s of every run's start (benchmarks/README.md, "Whole runs"): a thread
        does it while the first epoch trains, and the trackers get the picture when that epoch ends (trackers are
        only ever called from the training thread)."""
        preview = getattr(self.data.train, "preview", None)
        if not self.main or preview is None:
            return
        from trainkit.reports.preview import input_grid

        x, y = preview(epoch=1)  # the batch is cut here: the loader is the training thread's
        self.run_dir.mkdir(parents=True, exist_ok=True)

        def draw() -> Any:
            grid = input_grid(x, y, self.data.meta)
            if grid is not None:
                grid.save(self.run_dir / "inputs.png")
            return grid

        drawing = ThreadPoolExecutor(1, thread_name_prefix="trainkit-inputs-picture")
        self._drawn = drawing.submit(draw)
        drawing.shutdown(wait=False)  # the thread ends with its one task
        self.events.handlers["epoch_end"].insert(0, lambda trainer, *values: self._picture_done())

    def _picture_done(self, quiet: bool = False) -> None:
        """The inputs picture to the trackers, once its thread is done (raising what it raised, unless `quiet`:
        a run that is already failing says why it failed, not why its picture did)."""
        drawn, self._drawn = self._drawn, None
        if drawn is None:  # the handler stays (once an epoch, nothing to do): the events are being iterated
            return
        try:
            grid = drawn.result()
        except Exception:
            if quiet:
                return
            raise
        if grid is not None:
            self.logger.picture("inputs", grid)

    def test(self) -> dict[str, float]:
        """The test split's metrics with the best checkpoint's weights (the last, averaged ones when none was
        written); {} when the data has no labeled test split."""
        distributed.barrier()  # rank 0's last checkpoint is on disk before any rank reads best.ckpt
        if self.data.test is None:
            return {}
        best = self.manager.best_path
        if best.exists():
            checkpoint.load_modules(checkpoint.load(best), self.task.modules(), best)
        ema = self.opt.ema is not None and not best.exists()
        with self.opt.ema.swapped() if ema else nullcontext():
            metrics = evaluate(self.task, self.data.test, self.opt.autocast, "test/", self.settings.limit_eval_batches)
        self.events("test_end", metrics)
        return metrics

    def run(self) -> dict[str, Any]:
        """fit, test, then summary.json, the trackers' final results and the console summary: `trainkit train`."""
        try:
            self.fit()
        finally:
            self.close()
        summary = {**self.summary(self.test()), "wall_time_s": time.perf_counter() - self.started}
        if self.main:
            write_summary(self.run_dir, summary)
            if self.trackers is not None:
                self.trackers.finish(summary, self.run_dir)
            _print_summary(self.console, summary)
        return summary

    def close(self) -> None:
        """Closes the logs (the progress display, the trackers' open files); `fit` reopens nothing after it."""
        if self._drawn is not None:  # stopped before the first epoch's end: the picture still goes out
            self._picture_done(quiet=True)
        self.logger.close()

    def summary(self, test: dict[str, float]) -> dict[str, Any]:
        state, manager = self.state, self.manager
        final = dict(state.history[-1]) if state.history else {}
        best_row = next((r for r in state.history if r["epoch"] == manager.best_epoch), {})
        return {
            "status": "finished",
            "run_dir": str(self.run_dir),
            "epochs": state.epoch,
            "stopped_early": state.stopped_early,
            "steps": state.step,
            "monitor": manager.monitor,
            "monitor_mode": manager.mode,
            "best_epoch": manager.best_epoch,
            "best_value": manager.best,
            "final": final,
            "best": dict(best_row),
            "test": test,
            "checkpoints": {"last": str(manager.last_path), "best": str(manager.best_path)},
            "warnings": list(self.data.warnings),
        }


def _device(task: Task) -> str:
    params = [p for m in task.modules().values() for p in m.parameters()]
    return str(params[0].device) if params else "cpu"


def resume_arg(run_dir: Path) -> str:
    """`resume=DIR` as a shell passes it to Hydra: a sweep job's directory (`3_model=cnn,optimizer=sgd`) holds
    characters of Hydra's override grammar, so it is quoted for Hydra, and that for the shell."""
    path = shown(run_dir)
    if not any(c in path for c in "=,[]{}()'\" \\"):
        return f"resume={path}"
    return f"'resume=\"{path}\"'"


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    path = run_dir / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)  # readers (trainkit runs, resume=auto) never see half a file


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title=f"trainkit run: {summary['epochs']} epochs, {summary['wall_time_s']:.1f} s")
    table.add_column("metric")
    table.add_column("final", justify="right")
    table.add_column(f"best (epoch {summary['best_epoch']})", justify="right")
    final, best = summary["final"], summary["best"]
    for key in final:
        if key in ("epoch", "step") or key.startswith("lr/"):
            continue
        table.add_row(key, number(final.get(key)), number(best.get(key)))
    for key, value in summary["test"].items():
        table.add_row(key, "", number(value))
    console.print(table)
    console.print(f"best checkpoint: {shown(summary['checkpoints']['best'])}", highlight=False)
    console.print(f"run directory: [bold]{shown(summary['run_dir'])}[/bold]", highlight=False)
