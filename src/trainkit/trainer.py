"""The Trainer: one object, built from a composed config, that fits, tests and writes the run directory.

`trainkit train`, the Python API (`trainkit.train`) and benchmarks/ all run it. Outside code watches or
times a run through callbacks (`Callback`), never by replacing trainkit functions. The loop itself
(engine/loop.py) stays generic: the Trainer only wires it to checkpoints, logging and the callbacks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from contextlib import nullcontext
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from trainkit import rundirs
from trainkit.build import build_optimization, build_run, examples, plugin_origins, preflight
from trainkit.engine import checkpoint, distributed
from trainkit.engine.device import set_deterministic
from trainkit.engine.loop import FitState, Hooks, evaluate, fit, num_batches
from trainkit.engine.rng import seed_everything, set_rng_state
from trainkit.engine.signals import Interrupted, StopRequest, requeue_on_slurm
from trainkit.errors import UserError
from trainkit.logging.run_logger import RunLogger, SilentLogger
from trainkit.logging.text import number, shown

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


# Callbacks that `trainkit.train(..., callbacks=[...])` attaches to the Trainer the train command builds.
ATTACHED: ContextVar[tuple[Callback, ...]] = ContextVar("trainkit_callbacks", default=())


class _Events:
    """Calls `on_<event>(trainer, ...)` of every callback that overrides it: nothing at all for the others."""

    def __init__(self, trainer: Trainer, callbacks: Iterable[Callback]) -> None:
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
    """Everything one training run needs, built from its config: `fit()`, `test()`, or `run()` for both with
    the summary. `resume` continues a saved run (rundirs.find_resume); `stop` is the signal watcher
    (engine.signals.StopRequest) that makes the loop save and stop; both are optional."""

    def __init__(self, cfg: DictConfig, run_dir: str | Path, console: Console | None = None,
                 callbacks: Iterable[Callback] = (), resume: rundirs.Resume | None = None,
                 stop: StopRequest | None = None) -> None:
        self.started = time.perf_counter()
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.main = distributed.is_main()  # only rank 0 writes: logs, metrics, checkpoints, summary
        self.console = console if console is not None and self.main else Console(quiet=True)
        self.events = _Events(self, callbacks)
        preflight(cfg)  # the CLI checked already; a sweep job or a direct Trainer has not
        seed_everything(cfg.seed)
        self.built = built = build_run(cfg, restoring=resume is not None)  # a resume's weights: its checkpoint's
        self.warnings = _check_data(built.data, bool(cfg.data.get("allow_missing_classes", False)), self.console)
        set_deterministic(built.settings.deterministic)
        self.task, self.settings, self.loaders = built.task, built.settings, built.loaders
        self.task.distribute(lambda module: distributed.wrap(module, built.device))
        steps_per_epoch = num_batches(self.loaders["train"], self.settings.limit_train_batches)
        self.opt = build_optimization(cfg, self.task, self.settings, built.device, steps_per_epoch)
        self.manager = checkpoint.CheckpointManager(self.run_dir / "checkpoints", self.task.monitor,
                                                    self.task.monitor_mode, self.settings.keep_last_k)
        self.state = FitState()
        self._recipe = OmegaConf.to_yaml(cfg, resolve=True)  # what a checkpoint needs to rebuild its run
        self._plugins = plugin_origins(cfg)  # which plugin modules a restore will need loaded (never loads them)
        self._data = checkpoint.data_section(built.data.meta, examples(built.data.val))
        payload = checkpoint.load(resume.checkpoint) if resume is not None else None
        if payload is not None:
            self.state = self._restore(payload, resume)
            self.console.print(f"resuming [bold]{shown(self.run_dir)}[/bold] at epoch {self.state.epoch + 1}, batch "
                               f"{self.state.batch} (step {self.state.step})" + _changes(resume.changes))
        else:
            if self.settings.enable_checkpointing and self.main:
                self.manager.preflight(self._payload)
            data = built.data
            self.console.print(f"run directory: [bold]{shown(self.run_dir)}[/bold]  ({data.meta.name}, "
                               f"{len(data.train)} train / {len(data.val)} val samples, device {built.device}, "
                               f"precision {self.settings.precision})")
        if distributed.world_size() > 1:
            self.console.print(f"data-parallel: {distributed.world_size()} processes, global batch "
                               f"{distributed.world_size()} × {self.loaders['train'].batch_size}")
        self.trackers = _trackers(cfg, self.run_dir, payload) if self.main else None  # rank 0 alone reports
        stop_requested = (lambda: distributed.any_rank(stop.requested)) if stop is not None else (lambda: None)
        saving = self.settings.enable_checkpointing and self.main  # debug runs, and ranks > 0: nothing written
        self.hooks = Hooks(save_epoch=self._save_epoch if saving else (lambda metrics: None),
                           save_step=self._save_step if saving else (lambda: None),
                           stop_requested=stop_requested, event=self.events)  # every rank stops after the same step
        self.logger = RunLogger(self.run_dir, self.console, self.settings.max_epochs, progress=self.settings.progress,
                                plain_every_s=self.settings.plain_every_s, tensorboard=self._tensorboard,
                                batch_size=self.loaders["train"].batch_size,
                                resume_step=self.state.step if payload else None,
                                history=self.state.history, trackers=self.trackers) if self.main else SilentLogger()
        self.stop = stop
        if payload is not None:
            set_rng_state(payload["rng"])  # last: building the model above drew from the generators

    # --- what the loop calls ------------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        tracked = getattr(self, "trackers", None)  # opened after the checkpoint's preflight
        trackers = {"trackers": tracked.ids()} if tracked is not None else {}  # a resumed run continues them
        return checkpoint.make_payload(self._recipe, self.task.modules(), self.opt, self.state, self.manager,
                                       self._data, extra={**trackers, "plugins": self._plugins})

    def _save_epoch(self, metrics: dict[str, float]) -> None:
        self.events("checkpoint_start")
        self.manager.save_epoch(self._payload, metrics, self.state.epoch, self.state.step)
        self.events("checkpoint_end")

    def _save_step(self) -> None:
        self.events("checkpoint_start")
        self.manager.save_step(self._payload, self.state.epoch + 1, self.state.step)
        self.events("checkpoint_end")

    def _restore(self, payload: dict[str, Any], resume: rundirs.Resume) -> FitState:
        key = "training_modules" if "training_modules" in payload else "modules"
        checkpoint.load_modules(payload, self.task.modules(), resume.checkpoint, key)
        try:
            self.opt.load_state_dict(payload["optimization"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise checkpoint.CheckpointError(
                f"the optimizer/scheduler state in {resume.checkpoint} does not fit this run's optimizer config "
                f"({' '.join(str(exc).split())[:200]})."
            ) from None
        self.manager.load_state_dict(payload["best"])
        return FitState(**payload["fit"])

    # --- the run ------------------------------------------------------------------------------------------
    def fit(self, epochs: int | None = None) -> FitState:
        """Train until `epochs` epochs are complete (default trainer.max_epochs), from wherever the state is:
        a fresh run, a resumed one, or an earlier `fit` call. A run that stops on an error or a signal writes
        summary.json saying so (and requeues itself inside a SLURM job) before the error goes on."""
        if self.state.step == 0 and self.state.batch == 0:
            self._preview_inputs()
        self.events("fit_start")
        try:
            fit(self.task, self.loaders["train"], self.loaders["val"], self.opt, self.logger, self.settings,
                self.hooks, self.state, until=epochs)
        except UserError as exc:  # interrupted, diverged, a failed save: say so where `trainkit runs` looks
            if isinstance(exc, Interrupted):
                exc.args = (f"{exc} Continue it with: trainkit train {resume_arg(self.run_dir)}",)
            if self.main:
                status = "interrupted" if isinstance(exc, Interrupted) else "failed"
                write_summary(self.run_dir, {**self.summary({}), "status": status, "error": str(exc)})
                if self.trackers is not None:
                    self.trackers.end(status)
                requeued = requeue_on_slurm(self.stop.requested) if isinstance(exc, Interrupted) and self.stop else None
                if requeued:
                    self.console.print(requeued)
            self.close()
            raise
        self.events("fit_end")
        return self.state

    def _preview_inputs(self) -> None:
        """The seed tutorial's first picture: the first training batch as the model will see it (augmented, not
        yet normalized), captioned with its labels: inputs.png in the run directory and in TensorBoard."""
        if not self.main:
            return
        from trainkit.reports.preview import input_grid

        x, y = self.loaders["train"].preview(epoch=1)
        grid = input_grid(x, y, self.built.data.meta)
        if grid is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            grid.save(self.run_dir / "inputs.png")
            self.logger.picture("inputs", grid)

    def test(self) -> dict[str, float]:
        """The test split's metrics with the best checkpoint's weights (the last, averaged ones when none was
        written); {} when the data has no labeled test split."""
        distributed.barrier()  # rank 0's last checkpoint is on disk before any rank reads best.ckpt
        if "test" not in self.loaders:
            return {}
        best = self.manager.best_path
        if best.exists():
            checkpoint.load_modules(checkpoint.load(best), self.task.modules(), best)
        ema = self.opt.ema is not None and not best.exists()
        with self.opt.ema.swapped() if ema else nullcontext():
            metrics = evaluate(self.task, self.loaders["test"], self.opt.autocast, "test/",
                               self.settings.limit_eval_batches)
        self.events("test_end", metrics)
        return metrics

    def run(self) -> dict[str, Any]:
        """fit, test, then summary.json, TensorBoard's HPARAMS and the console summary: `trainkit train`."""
        try:
            self.fit()
        finally:
            self.close()
        summary = {**self.summary(self.test()), "wall_time_s": time.perf_counter() - self.started}
        if self.main:
            write_summary(self.run_dir, summary)
            if self.trackers is not None:
                self.trackers.finish(summary, self.run_dir)
            if self._tensorboard:  # the HPARAMS tab: this run's config beside its final metrics
                log_hparams(self.run_dir, self.cfg, summary)
            _print_summary(self.console, summary)
        return summary

    @property
    def _tensorboard(self) -> bool:
        """TensorBoard logs when `logger` chooses it (the default) and trainer.tensorboard has not switched it off."""
        return bool(self.settings.tensorboard) and "tensorboard" in (self.cfg.get("logger") or {"tensorboard": {}})

    def close(self) -> None:
        """Closes the logs (TensorBoard's writer, the progress display); `fit` reopens nothing after it."""
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
            "warnings": self.warnings,
        }


def _trackers(cfg: DictConfig, run_dir: Path, payload: dict[str, Any] | None) -> Any:
    """The trackers `logger=` chooses (logging/trackers.py), given the flattened config as params; a resumed run
    continues the tracker runs whose ids its checkpoint carries."""
    from trainkit.logging import trackers
    from trainkit.rundirs import flatten

    logger = OmegaConf.to_container(cfg.get("logger") or {}, resolve=True)
    if not trackers.names(logger):  # type: ignore[arg-type]
        return None
    params = {k: v for k, v in flatten(OmegaConf.to_container(cfg, resolve=True)).items()  # type: ignore[arg-type]
              if k != "resume"}
    return trackers.open_trackers(logger, run_dir, params, (payload or {}).get("trackers"))  # type: ignore[arg-type]


def _check_data(data: Any, allow: bool, console: Console) -> list[str]:
    """What `trainkit data check` would say that makes training meaningless is an error (data.allow_missing_classes
    =true trains anyway); copies of test samples in train are a warning, printed and kept in summary.json."""
    from trainkit.data.base import DataError
    from trainkit.data.check import training_problems

    fatal, warnings = training_problems(data)
    if fatal and not allow:
        raise DataError(f"data={data.meta.name}: {' '.join(fatal)} Fix the data, or set data.allow_missing_classes=true "
                        f"if that is what you mean.")
    for warning in (warnings + fatal):
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    return warnings + fatal


def resume_arg(run_dir: Path) -> str:
    """`resume=DIR` as a shell passes it to Hydra: a sweep job's directory (`3_model=cnn,optimizer=sgd`) holds
    characters of Hydra's override grammar, so it is quoted for Hydra, and that for the shell."""
    path = shown(run_dir)
    if not any(c in path for c in "=,[]{}()'\" \\"):
        return f"resume={path}"
    return f"'resume=\"{path}\"'"


def _changes(changes: list[tuple[str, Any, Any]]) -> str:
    if not changes:
        return ""
    return "; changed since the checkpoint: " + ", ".join(f"{k} {old!r} → {new!r}" for k, old, new in changes)


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


def log_hparams(run_dir: Path, cfg: DictConfig, summary: dict[str, Any]) -> None:
    """TensorBoard's HPARAMS tab: this run's config (every scalar key) beside its best and test metrics, in the
    run's own tensorboard/ directory, labelled with the overrides it was started with."""
    from trainkit.commands.runs import overrides_of
    from trainkit.logging.tensorboard import TensorBoardLog  # tensorboard is slow to import
    from trainkit.rundirs import flatten

    config = OmegaConf.to_container(cfg, resolve=True)
    params = {k: v for k, v in flatten(config).items() if k != "resume"}  # type: ignore[arg-type]
    metrics = dict(summary.get("test") or {})
    if isinstance(summary.get("best_value"), (int, float)):
        metrics[f"best/{summary['monitor']}"] = summary["best_value"]
    tb = TensorBoardLog(run_dir / "tensorboard")
    try:
        tb.hparams(params, metrics, step=int(summary.get("steps") or 0), name=" ".join(overrides_of(run_dir)))
    finally:
        tb.close()
