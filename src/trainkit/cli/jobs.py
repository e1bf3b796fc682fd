"""A sweep (`-m`) checked as a whole before its first job: the jobs Hydra's sweeper will run are worked out from the
line, and each job's config goes through the same checks as a single run's (trainkit.cli.compose.check_job); a
search's settings and space, and the launcher's settings, are checked too. A mistake in job 7 of 8 is said before job
0 starts, and a search of nothing is refused rather than run.

A grid of up to MAX_JOBS jobs is checked job by job; a larger one value by value (every value of every swept key,
the other keys at their first values), so that the check stays a second or two.
"""

from __future__ import annotations

from typing import Any

from trainkit.cli.line import Invocation
from trainkit.errors import ConfigError, UsageError, UserError

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
SEARCH_SWEEPER = "hydra_plugins.trainkit_optuna.OptunaSweeper"
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher."
MAX_JOBS = 64


def is_hydra_key(override: str) -> bool:
    return override.lstrip("+~").startswith(("hydra.", "hydra/"))


def check_sweep(inv: Invocation, overrides: list[str]) -> None:
    from trainkit.cli.compose import check_job

    hydra_lines = [o for o in overrides if is_hydra_key(o)]
    parsed = _parse(inv, [o for o in overrides if not is_hydra_key(o)])
    swept_hydra = [o for o in _parse(inv, hydra_lines) if o.is_sweep_override()]
    if swept_hydra:
        raise UsageError(f"{swept_hydra[0].input_line}: Hydra's own settings (hydra.*) cannot be swept; sweep the "
                         f"command's keys (e.g. optimizer=sgd,adam) and give each hydra.* setting one value.")
    first = check_job(inv, [*hydra_lines, *(_first(o) for o in parsed)])
    sweeper = str(first.hydra_node.sweeper.get("_target_", BASIC_SWEEPER))
    inv.launcher = str(first.hydra_node.launcher.get("_target_", ""))
    check_launcher(first.hydra_node.launcher)
    if sweeper == SEARCH_SWEEPER:
        jobs = _search_jobs(first.hydra_node.sweeper, parsed)
    elif sweeper == BASIC_SWEEPER:
        jobs = _grid_jobs(inv, first.hydra_node.sweeper, parsed)
    else:  # an installed sweeper of another kind: its jobs are its own to work out; the first one is checked
        jobs = []
    seen = {tuple(_first(o) for o in parsed)}
    for num, job in enumerate(jobs):
        if tuple(job) in seen:
            continue
        seen.add(tuple(job))
        try:
            check_job(inv, [*hydra_lines, *job])
        except UserError as exc:  # said of the job it is in, before any job starts
            which = f"a trial with {' '.join(job)}" if sweeper == SEARCH_SWEEPER else f"job {num} ({' '.join(job)})"
            exc.args = (f"{which} of this sweep would fail, so none starts: {exc}",)
            raise


def refuse_search_without_multirun(inv: Invocation, hydra: Any) -> None:
    """A search preset (hparams_search=...) without -m would train once with the preset's data and nothing searched."""
    if str(hydra.sweeper.get("_target_", BASIC_SWEEPER)) == BASIC_SWEEPER:
        return
    chosen = next((a for a in inv.overrides() if a.lstrip("+").startswith(("hparams_search=", "hydra/sweeper="))),
                  "hydra/sweeper")
    rest = " ".join(inv.line[2:])
    raise UsageError(f"{chosen} is a search: its trials run as a sweep, so it needs -m (--multirun): "
                     f"trainkit {inv.name} -m {rest}")


def check_launcher(launcher: Any) -> None:
    """The launcher's settings that would fail only once jobs are handed to it."""
    target = str(launcher.get("_target_", ""))
    if target == JOBLIB:
        n_jobs = launcher.get("n_jobs")
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
            raise ConfigError(f"hydra.launcher.n_jobs={n_jobs}: joblib runs that many jobs side by side: give a "
                              f"whole number of at least 1, or -1 for one per CPU (-2: all CPUs but one).")
    if target.startswith(SUBMITIT):
        for key in ("nodes", "tasks_per_node", "cpus_per_task", "gpus_per_node", "timeout_min", "mem_gb"):
            value = launcher.get(key)
            low = 0 if key == "gpus_per_node" else 1
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < low):
                raise ConfigError(f"hydra.launcher.{key}={value}: give a number of at least {low}"
                                  f"{', or null' if key in ('cpus_per_task', 'gpus_per_node', 'mem_gb') else ''} "
                                  f"(configs/hydra/launcher/slurm.yaml says what each key means).")


def _parse(inv: Invocation, overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create(config_loader=_config_loader(inv)).parse_overrides(overrides)
    except (HydraException, ValueError) as exc:
        said = " ".join(str(exc).split("See https://")[0].split())
        raise UsageError(f"{said.rstrip('.')}. Overrides are written in Hydra's grammar (key=value, sweeps "
                         f"key=a,b or key=range(1,4)); quote a value with spaces or characters beyond ASCII: "
                         f"key='a value'.") from None


def _config_loader(inv: Invocation) -> Any:
    """Hydra's config loader over trainkit's configs and the user's --config-dir folders: what glob(...) sweeps
    list the options of a config group with."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    from trainkit.cli.compose import config_dir

    path = create_config_search_path(f"file://{config_dir()}")
    for folder in inv.config_dirs:
        path.append("command-line", f"file://{folder.resolve()}")
    return ConfigLoaderImpl(config_search_path=path)


def _first(override: Any) -> str:
    """An override with a sweep replaced by its first value (an interval by its lower bound)."""
    if not override.is_sweep_override():
        return override.input_line
    key = override.get_key_element()
    if override.is_interval_sweep():
        return f"{key}={override.value().start}"
    values = list(override.sweep_string_iterator())
    if not values:
        raise UsageError(f"{override.input_line} sweeps no value (an empty range: stop is excluded, and a range "
                         f"counts from start towards stop by step): e.g. seed=range(0, 4) is 0, 1, 2, 3.")
    return f"{key}={values[0]}"


def _grid_jobs(inv: Invocation, sweeper: Any, parsed: list[Any]) -> list[list[str]]:
    """The jobs of a grid sweep, as Hydra's basic sweeper works them out (its params first, then the line)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    intervals = [o for o in parsed if o.is_interval_sweep()]
    if intervals:
        raise UsageError(f"{intervals[0].input_line}: an interval is a search space, which a grid sweep cannot "
                         f"enumerate: search it with Optuna (hydra/sweeper=optuna, or a preset: "
                         f"hparams_search=regression_optuna), or sweep values: key=0.1,0.01 or key=range(...).")
    params = sweeper.get("params") or {}
    if params:
        parsed = _parse(inv, [*(f"{k}={v}" for k, v in params.items()), *(o.input_line for o in parsed)])
    sizes = [len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1 for o in parsed]
    count = 1
    for size in sizes:
        count *= size
    if count <= MAX_JOBS:
        (batch,) = BasicSweeper.split_arguments(parsed, None)
        return [list(job) for job in batch]
    return _one_at_a_time(parsed)


def _one_at_a_time(parsed: list[Any]) -> list[list[str]]:
    """Every value of every swept key once, the other keys at their first values."""
    base = [_first(o) for o in parsed]
    jobs = []
    for i, override in enumerate(parsed):
        if override.is_sweep_override():
            for value in override.sweep_string_iterator():
                jobs.append([*base[:i], f"{override.get_key_element()}={value}", *base[i + 1:]])
    return jobs


def _search_jobs(sweeper: Any, parsed: list[Any]) -> list[list[str]]:
    """For a search: its settings and space checked, and one job per value a trial can take of each searched key (an
    interval's two ends; a long range's two ends), the other keys at their first values."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from trainkit.rundirs.search import SearchSettings, space, trial_overrides

    settings = SearchSettings.of(sweeper)
    searched, fixed = space(settings, [o.input_line for o in parsed])
    values: dict[str, list[Any]] = {}
    for key, dist in searched.items():
        if isinstance(dist, CategoricalDistribution):
            values[key] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and (dist.high - dist.low) // dist.step < 16:
            values[key] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, (IntDistribution, FloatDistribution)):
            values[key] = [dist.low, dist.high]
    first = {key: found[0] for key, found in values.items()}
    jobs = []
    for key, found in values.items():
        for value in found:
            jobs.append(trial_overrides({**first, key: value}, searched, fixed))
    return jobs
