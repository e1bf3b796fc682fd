"""Optuna searches (`trainkit train -m hparams_search=...`): each trial is a sweep job, and the study lives in the
sweep directory (Optuna's own SQLite storage, optuna.db), so `trainkit sweep resume DIR` continues the same study.

The search space is written in Hydra's sweep grammar (choice, range, interval, tag(log, interval(...))) and read by
Hydra's override parser; Optuna samples it, Hydra's launcher runs the jobs, and each job's return value (what
`trainkit train` returns: the monitored metric's best) is its trial's value. Job N is trial N. Finished and failed
trials count toward n_trials; a trial that was running when the search stopped is finished first on resume: its job
continues from its checkpoint (exactly, as in a resumed grid sweep), or runs again if it saved none.
The Hydra plugin class that Hydra instantiates is hydra_plugins.trainkit_optuna.OptunaSweeper.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainkit.errors import ConfigError

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override
    from hydra.plugins.launcher import Launcher
    from omegaconf import DictConfig
    from optuna import Study
    from optuna.distributions import BaseDistribution

log = logging.getLogger(__name__)
STUDY_FILE = "optuna.db"
RESULTS_FILE = "optimization_results.yaml"
RESUME_DIR = ".resume"  # a resumed trial's Hydra files, until `train` folds them into its job (rundirs.adopt)
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler", "qmc": "QMCSampler",
            "gp": "GPSampler", "nsgaii": "NSGAIISampler", "bruteforce": "BruteForceSampler"}


@dataclass
class SearchSettings:
    """hydra.sweeper.* of configs/hydra/sweeper/optuna.yaml."""

    direction: str = "minimize"  # or maximize: the way the monitored metric improves
    study_name: str = "search"
    storage: str | None = None  # an Optuna storage URL; None: sqlite:///<sweep dir>/optuna.db
    n_trials: int = 20  # trials in all, counting those that a resumed search had already finished
    n_jobs: int = 1  # trials asked for at once: hydra/launcher=joblib runs them side by side
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe"})  # name, then the sampler's arguments
    params: dict[str, str] = field(default_factory=dict)  # key: a Hydra sweep, e.g. tag(log, interval(1e-4, 0.1))

    def check(self) -> SearchSettings:
        """Refuse settings that would search nothing or fail only once trials run: no trials, no trial at a time,
        an unknown direction or sampler, a sampler's argument it does not take, a study without a name."""
        for key, low in (("n_trials", 1), ("n_jobs", 1)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"hydra.sweeper.{key}={value}: give a whole number of at least {low} (trials "
                                  f"{'in all' if key == 'n_trials' else 'asked for at once'}), e.g. "
                                  f"hydra.sweeper.{key}={20 if key == 'n_trials' else 2}.")
        if self.direction not in ("minimize", "maximize"):
            raise ConfigError(f"hydra.sweeper.direction={self.direction}: a search either minimizes or maximizes the "
                              f"monitored metric: hydra.sweeper.direction=minimize (a loss) or maximize (an accuracy).")
        if not isinstance(self.study_name, str) or not self.study_name.strip():
            raise ConfigError(f"hydra.sweeper.study_name={self.study_name!r}: give the study a name, e.g. "
                              f"hydra.sweeper.study_name=search.")
        if self.storage is not None and not isinstance(self.storage, str):
            raise ConfigError(f"hydra.sweeper.storage={self.storage!r}: give an Optuna storage URL "
                              f"(sqlite:///path/to/study.db), or null for the sweep directory's optuna.db.")
        if not isinstance(self.sampler, dict) or not isinstance(self.params, dict):
            which = "sampler" if not isinstance(self.sampler, dict) else "params"
            raise ConfigError(f"hydra.sweeper.{which} must be a mapping of keys to values (configs/hydra/sweeper/"
                              f"optuna.yaml shows its form).")
        make_sampler(self.sampler)
        return self

    @classmethod
    def of(cls, node: Any) -> SearchSettings:
        """The settings of a composed hydra.sweeper node (or its keyword arguments), checked."""
        from omegaconf import OmegaConf

        plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
        plain = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in plain.items()}
        known = {k: plain[k] for k in ("direction", "study_name", "storage", "n_trials", "n_jobs", "sampler",
                                       "params") if k in plain}
        for key in ("sampler", "params"):
            if known.get(key) is None:
                known.pop(key, None)
        return cls(**known).check()


def storage_url(settings: SearchSettings, sweep_dir: Path) -> str:
    return settings.storage or f"sqlite:///{(Path(sweep_dir) / STUDY_FILE).resolve()}"


def distribution(override: Override) -> BaseDistribution:
    """An Optuna distribution with the values Hydra's sweep `override` stands for; an empty or inverted space is
    refused, naming the key (a search of nothing would otherwise fail only when its first trial is asked for)."""
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep = override.value()
    key = override.get_key_element().lstrip("+~")
    if override.is_choice_sweep() or (override.is_range_sweep() and sweep.shuffle):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        if not choices:
            raise ConfigError(f"hydra.sweeper.params: {override.input_line} has no values to choose from.")
        return CategoricalDistribution(choices)
    if override.is_range_sweep():  # Hydra's range, stop excluded: its first and last values, ordered
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(f"hydra.sweeper.params: {override.input_line} is an empty range (stop is excluded, and a "
                              f"range counts from start towards stop by step): e.g. {key}=range(1, 5) is 1, 2, 3, 4.")
        low, high, step = min(values), max(values), abs(sweep.step)
        if all(isinstance(v, int) for v in values):
            return IntDistribution(low, high, step=step)
        return FloatDistribution(low, high, step=step)
    if override.is_interval_sweep():
        low, high, log = sweep.start, sweep.end, "log" in sweep.tags
        if not low < high:
            raise ConfigError(f"hydra.sweeper.params: {override.input_line} is an empty or inverted interval: write "
                              f"the lower bound first and make it smaller, e.g. {key}=interval(0.001, 0.1).")
        if log and low <= 0:
            raise ConfigError(f"hydra.sweeper.params: {override.input_line}: a log interval needs a lower bound above "
                              f"0, e.g. {key}=tag(log, interval(0.0001, 0.1)).")
        return FloatDistribution(low, high, log=log)
    raise ConfigError(f"hydra.sweeper.params: {override.input_line} is not a search space that Optuna can sample: "
                      f"use choice(a, b, ...), range(start, stop, step), interval(low, high) or "
                      f"tag(log, interval(low, high)).")


def space(settings: SearchSettings, arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """The searched keys and their distributions, and the fixed overrides of every trial (by key). The command
    line comes after the preset's params, so `optimizer=sgd` there fixes a key that the preset searches."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    lines = [f"{k}={v}" for k, v in settings.params.items()] + list(arguments)
    searched: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except (HydraException, ValueError) as exc:
        said = " ".join(str(exc).split("See https://")[0].split())
        raise ConfigError(f"hydra.sweeper.params: {said} (the space is written in Hydra's sweep grammar: "
                          f"choice(a, b), range(start, stop, step), interval(low, high)).") from None
    for override in parsed:
        key = override.get_key_element().lstrip("+~")
        searched.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            searched[key] = distribution(override)
        else:
            fixed[key] = override.input_line
    if not searched:
        raise ConfigError("this search has nothing to search: hydra.sweeper.params is empty and the command line "
                          "sweeps no key. Give it a space on the command line, e.g. optimizer.lr='tag(log, interval(0.0001, "
                          "0.1))' optimizer=choice(adam,sgd), or choose a preset: hparams_search=regression_optuna.")
    return searched, fixed


def trial_overrides(params: dict[str, Any], searched: dict[str, BaseDistribution], fixed: dict[str, str]) -> list[str]:
    """A trial's job overrides: the fixed ones as typed, the searched keys with the trial's values."""
    return [*fixed.values(), *(f"{key}={params[key]}" for key in searched)]


def make_sampler(spec: dict[str, Any], trials_so_far: int = 0):
    """The sampler named by hydra.sweeper.sampler. Optuna keeps no sampler state in the study, so a resumed search
    seeds its sampler with seed + the trials so far: a fresh RNG with the first seed would draw the same
    parameters as the search's first trials again."""
    import optuna

    args = dict(spec)
    name = str(args.pop("name", "tpe"))
    seed = args.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"hydra.sweeper.sampler.seed={seed}: give a whole number (0 or more), or null.")
        args["seed"] = seed + trials_so_far
    if name not in SAMPLERS:
        raise ConfigError(f"hydra.sweeper.sampler.name={name} is not a sampler trainkit knows: choose one of "
                          f"{', '.join(SAMPLERS)} (Optuna's {', '.join(SAMPLERS.values())}).")
    try:
        return getattr(optuna.samplers, SAMPLERS[name])(**args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"hydra.sweeper.sampler: {exc} (the keys besides `name` are {SAMPLERS[name]}'s own "
                          f"arguments).") from None


class Search:
    """One run of a search: finish the trials a stopped run left running, then ask for new ones until the study
    has n_trials finished trials."""

    def __init__(self, settings: SearchSettings, launcher: Launcher, config: DictConfig) -> None:
        self.settings, self.launcher, self.config = settings, launcher, config
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def run(self, arguments: list[str]) -> None:
        import optuna
        from omegaconf import OmegaConf

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # trainkit says what happens, once
        self.settings.check()
        searched, fixed = space(self.settings, arguments)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        # As Hydra's basic sweeper does: the sweep's command line, which `trainkit sweep resume` runs again.
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        study = open_study(self.settings, self.sweep_dir)
        study.sampler = make_sampler(self.settings.sampler, len(study.trials))
        done = len(_ended(study))
        log.info("search: study %s in %s, %s, %d of %d trials done", study.study_name,
                 storage_url(self.settings, self.sweep_dir), self.settings.direction, done, self.settings.n_trials)
        self._finish_stopped_trials(study, searched, fixed)
        while (left := self.settings.n_trials - len(_ended(study))) > 0:
            trials = [_ask(study, searched) for _ in range(min(self.settings.n_jobs, left))]
            batch = [(t.number, trial_overrides(t.params, searched, fixed)) for t in trials]
            numbers = [n for n, _ in batch]
            consecutive = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
            for part in [batch] if consecutive else [[b] for b in batch]:  # job N is trial N
                self._launch(study, part)
        write_results(study, self.sweep_dir / RESULTS_FILE)

    def _launch(self, study: Study, batch: list[tuple[int, list[str]]]) -> None:
        returns = self.launcher.launch([overrides for _, overrides in batch], initial_job_idx=batch[0][0])
        for (number, _), ret in zip(batch, returns):
            try:
                value = ret.return_value  # raises what the job raised
            except Exception as exc:
                log.warning("trial %d failed: %s", number, exc)
                value = None
            tell(study, number, value)

    def _finish_stopped_trials(self, study: Study, searched: dict, fixed: dict) -> None:
        """Trials still RUNNING in the study were stopped with the search (one process runs a search)."""
        from optuna.trial import TrialState

        from trainkit.rundirs.claim import job_number
        from trainkit.rundirs.sweeps import job_dirs

        found = {job_number(p): p for p in job_dirs(self.sweep_dir)}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if set(trial.params) != set(searched):
                raise _changed(study, f"trial {trial.number} has {', '.join(sorted(trial.params)) or 'no keys'}")
            overrides = trial_overrides(trial.params, searched, fixed)
            self._finish(study, trial.number, overrides, found.get(str(trial.number)))
        shutil.rmtree(self.sweep_dir / RESUME_DIR, ignore_errors=True)

    def _finish(self, study: Study, number: int, overrides: list[str], job: Path | None) -> None:
        """Tell the study how trial `number` ended, resume its job from its checkpoint, or run it again."""
        from trainkit.rundirs.claim import is_locked, quoted
        from trainkit.rundirs.read import read_run

        if job is not None and is_locked(job):
            raise ConfigError(f"trial {number}'s job {job} is running in another process: a search runs in one "
                              f"process at a time. Wait for it to end, then resume again.")
        run = read_run(job) if job is not None else None
        if run is not None and run.status in ("finished", "failed"):  # it ended, but the study was not told
            tell(study, number, run.best_value if run.status == "finished" else None)
        elif job is not None and (job / "checkpoints" / "last.ckpt").is_file():
            log.info("trial %d: resuming job %s from its checkpoint", number, job.name)
            scratch = f"hydra.sweep.subdir={RESUME_DIR}/{number}"
            self._launch(study, [(number, [*overrides, f"resume={quoted(job)}", scratch])])
        else:
            if job is not None:  # stopped before its first checkpoint: from scratch, under the same number
                shutil.rmtree(job)
            log.info("trial %d: running it again (it saved no checkpoint)", number)
            self._launch(study, [(number, overrides)])


def open_study(settings: SearchSettings, sweep_dir: Path) -> Study:
    """The search's Optuna study, created or (a resumed search) loaded; a storage that cannot hold it (a damaged or
    foreign optuna.db, a study of the other direction) is a ConfigError that names it."""
    import optuna

    url = storage_url(settings, sweep_dir)
    try:
        return optuna.create_study(storage=url, load_if_exists=True, study_name=settings.study_name,
                                   direction=settings.direction)
    except Exception as exc:  # SQLAlchemy's and Optuna's errors alike: the storage is the user's to fix
        said = " ".join(str(exc).split("(Background on this error")[0].split())[:300]
        where = url.removeprefix("sqlite:///")
        raise ConfigError(f"the search's study cannot be opened in {where}: {type(exc).__name__}: {said}. If that file "
                          f"is damaged (or from another program), move it away: the search then starts a new study "
                          f"(its finished jobs stay, but the sampler no longer learns from them).") from None


def _ask(study: Study, searched: dict[str, BaseDistribution]) -> Any:
    try:
        return study.ask(searched)
    except ValueError as exc:  # a key searched over another kind of space than the study's earlier trials
        raise _changed(study, " ".join(str(exc).split())) from None


def _changed(study: Study, said: str) -> ConfigError:
    return ConfigError(f"the search space is not the one study {study.study_name!r} began with ({said}): a resumed "
                       f"search keeps its space (hydra.sweeper.params and the swept keys as first given). Resume it "
                       f"with the same settings, or start a new search (a new sweep directory or study_name).")


def _ended(study: Study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED))


def tell(study: Study, number: int, value: Any) -> None:
    """A job's return value is its trial's value; a failed job (None: trainkit.cli._job_failed) fails its trial."""
    from optuna.trial import TrialState

    number_value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if math.isfinite(number_value):
        study.tell(number, number_value)
        log.info("trial %d (job %d): %s", number, number, number_value)
    else:
        study.tell(number, state=TrialState.FAIL)
        log.info("trial %d (job %d): failed", number, number)


def write_results(study: Study, path: Path) -> None:
    """optimization_results.yaml: the best trial so far (as Hydra's Optuna sweeper wrote it), if any finished."""
    from omegaconf import OmegaConf
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return
    best = study.best_trial
    OmegaConf.save(OmegaConf.create({"name": "optuna", "study": study.study_name, "best_trial": best.number,
                                     "best_params": best.params, "best_value": best.value}), path)
    log.info("best: trial %d, %s, value %s", best.number, best.params, best.value)
