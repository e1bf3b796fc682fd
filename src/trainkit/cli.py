"""`trainkit <command> [overrides]`: picks the command and hands the rest of the line to Hydra.

`trainkit --help` imports neither torch nor Hydra: a command's modules are imported only when it runs.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any



@dataclass(frozen=True)
class Command:
    """One `trainkit` subcommand. A Hydra command has configs/<config>.yaml and a function
    `fn(cfg, run_dir, console) -> result`; a plain command has a function `fn(argv) -> exit code`."""

    usage: str  # what `trainkit --help` shows
    target: str  # "module:function", imported only when the command runs
    config: str | None = None  # Hydra primary config name; None: a plain command
    # Works on a run's stored config: `data.x=1` changes that config, and may name keys that the
    # command's own config lacks, so it reaches Hydra as `++data.x=1` (add or override).
    recipe_overrides: bool = False
    run_dir: str | None = None  # strftime pattern of a new run directory (as in its config's hydra.run.dir)


COMMANDS: dict[str, Command] = {
    "train": Command("train a model: trainkit train model=cnn data=cifar10 trainer.max_epochs=5\n"
                     "sweeps: trainkit train -m optimizer=sgd,adam model=mlp,cnn",
                     "trainkit.commands.train:train", config="train", run_dir="outputs/%Y-%m-%d/%H-%M-%S"),
    "eval": Command("evaluate a checkpoint on its test split: trainkit eval ckpt=outputs/.../checkpoints/best.ckpt",
                    "trainkit.commands.evaluate:run_eval", config="eval", recipe_overrides=True,
                    run_dir="outputs/eval/%Y-%m-%d/%H-%M-%S"),
    "data check": Command("check a data set before training on it: trainkit data check data=mnist_csv data.train_csv=PATH",
                          "trainkit.commands.data:check", config="data_check"),
    "data prepare": Command("write MNIST CSV files from the IDX files: trainkit data prepare mnist-csv --source DIR "
                            "--out DIR [--download]", "trainkit.commands.data:prepare"),
    "predict": Command("run a model on new data: trainkit predict ckpt=.../best.ckpt input=test.csv (or a folder of images)",
                       "trainkit.commands.predict:run_predict", config="predict", recipe_overrides=True,
                       run_dir="outputs/predict/%Y-%m-%d/%H-%M-%S"),
    "export": Command("write a self-contained model file: trainkit export ckpt=... format=torchscript|torch_export|onnx",
                      "trainkit.commands.export:run_export", config="export", recipe_overrides=True,
                      run_dir="outputs/export/%Y-%m-%d/%H-%M-%S"),
    "sample": Command("draw new samples from a GAN as a PNG: trainkit sample ckpt=.../best.ckpt n=64",
                      "trainkit.commands.sample:run_sample", config="sample", recipe_overrides=True,
                      run_dir="outputs/sample/%Y-%m-%d/%H-%M-%S"),
    "runs": Command("list past runs, newest first: trainkit runs [DIR]; two side by side: trainkit runs --compare A B",
                    "trainkit.commands.runs:main"),
    "list": Command("every model, dataset, task, optimizer and scheduler by name, and where each comes from: "
                    "trainkit list [plugins=[my_project.nets]]", "trainkit.commands.listing:main"),
    "sweep resume": Command("finish a stopped sweep: trainkit sweep resume outputs/multirun/DATE/TIME [--retry-failed]",
                            "trainkit.commands.sweep:main"),
}
RECIPE_ROOTS = ("data.", "model.", "optimizer.", "scheduler.", "trainer.", "seed=")
SWEEP_DIR = "outputs/multirun/%Y-%m-%d/%H-%M-%S"
NO_RUN_FLAGS = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "-sc", "--shell-completion",
                "--resolve", "-p", "--package")


USER_DIRS: list[Path] = []  # the config directories the command line adds (--config-dir)
# Run directories this process created: the only ones an early error may remove again.
CREATED: set[Path] = set()


def _claim_output_dir(command: Command, args: list[str]) -> list[str]:
    """Two runs started in the same second must not share a directory: claim a fresh one (atomic
    mkdir, `_1`, `_2`... when taken) and hand it to Hydra, unless the user chose one or nothing runs."""
    if command.run_dir is None or any(a in NO_RUN_FLAGS or a.startswith("--cfg=") for a in args):
        return args
    multirun = any(a in ("-m", "--multirun") for a in args)
    key, pattern = ("hydra.sweep.dir", SWEEP_DIR) if multirun else ("hydra.run.dir", command.run_dir)
    chosen = next((a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")), None)
    if chosen is not None:
        if not multirun and not Path(chosen).exists():
            CREATED.add(Path(chosen).resolve())
        return args
    import time

    from trainkit.rundirs import claim

    claimed = claim(time.strftime(pattern))
    if not multirun:
        CREATED.add(Path(claimed).resolve())
    return [*args, f"{key}={claimed}"]


def _world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _agree_output_dir(command: Command, args: list[str]) -> list[str]:
    """Under torchrun: rank 0 claims the run directory and every rank uses it; ranks > 0 write no
    Hydra files or logs there (one run directory per run, not per rank)."""
    from trainkit.engine import distributed

    distributed.setup()
    claimed = distributed.agree(_rank0_output_dir(command, args) if distributed.is_main() else None)
    if distributed.is_main():
        return claimed
    return [*claimed, "hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


def _rank0_output_dir(command: Command, args: list[str]) -> list[str]:
    """A restarted process group (torchrun --max_restarts) goes on in the run directory that its first attempt
    trained in, which torch elastic's agent keeps for it; a first attempt claims a new one."""
    from trainkit.engine import distributed

    earlier = distributed.recall("run_dir")
    multirun = any(a in ("-m", "--multirun") for a in args)
    if earlier is None or command.run_dir is None or multirun or any(a.startswith("hydra.run.dir=") for a in args):
        return _claim_output_dir(command, args)
    return [*args, f"hydra.run.dir={earlier}"]


def usage() -> str:
    width = max(map(len, COMMANDS))
    indent = "\n" + " " * (width + 4)
    lines = [f"  {name:<{width}}  {cmd.usage.replace(chr(10), indent)}" for name, cmd in COMMANDS.items()]
    return (
        "usage: trainkit <command> [hydra overrides and flags]\n\ncommands:\n" + "\n".join(lines) + "\n\n"
        "Hydra commands take Hydra's flags: --help (the command's config groups and options), --cfg job\n"
        "(print the composed config), -m/--multirun, --config-dir DIR (your own config groups), --info.\n"
        "Run `trainkit <command> --help` for a command's options.\n"
    )


def _split_command(args: list[str]) -> tuple[str, list[str]] | None:
    """The longest run of leading words that names a command (`data check` before `data`)."""
    for n in range(min(len(args), 3), 0, -1):
        name = " ".join(args[:n])
        if name in COMMANDS:
            return name, args[n:]
    return None


def config_dir() -> Path:
    """configs/ inside the installed wheel, else the source tree's top-level configs/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parents[1] / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise SystemExit("trainkit: its configs/ directory is missing from the installation; reinstall trainkit.")


def _register_schemas() -> None:
    from hydra.core.config_store import ConfigStore

    from trainkit.engine.settings import TrainerSettings

    store = ConfigStore.instance()
    store.store(group="trainer", name="schema", node=TrainerSettings)
    _store_registered_options(store)
    # hydra.sweep.subdir names each job after its overrides (readable TensorBoard run names). Hydra hands
    # registered resolvers to its joblib and submitit workers with the rest of its state.
    from omegaconf import OmegaConf

    from trainkit.rundirs import job_dir_name

    OmegaConf.register_new_resolver("trainkit_job_dir", job_dir_name, replace=True)


def _store_registered_options(store) -> None:
    """Every registered component without a YAML file of its own (a plugin's, torch's schedulers) gets a generated
    option in its config group, its keys from its signature: `model=my_net`, `scheduler=ExponentialLR`."""
    from trainkit import registry
    from trainkit.build import GIVEN

    given = {*GIVEN, "seed"}
    for group in registry.REGISTRIES.values():
        for entry in group.entries.values():
            # A YAML file of the same name is the option (Hydra would take the node as its schema, and warn).
            if not any((folder / group.group / f"{entry.name}.yaml").is_file() for folder in (config_dir(), *USER_DIRS)):
                store.store(group=group.group, name=entry.name, node=registry.option_node(entry, given),
                            provider="trainkit" if not entry.plugin else entry.origin)


def _run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _clean_up(run_dir: Path, exc: Exception) -> None:
    """No run directory left half-made by an error before any result (never one the user had, like `.`)."""
    made_here = run_dir.resolve() in CREATED
    if made_here and not getattr(exc, "keeps_run_dir", False) and not any(run_dir.glob("checkpoints/*.ckpt")):
        shutil.rmtree(run_dir, ignore_errors=True)


def _fail(console, run_dir: Path, exc: Exception) -> None:
    code = getattr(exc, "exit_code", 1)
    label = "[bold yellow]stopped:[/bold yellow]" if code != 1 else "[bold red]error:[/bold red]"
    console.print(label, end=" ")
    console.print(str(exc), markup=False, highlight=False, soft_wrap=True)  # a message may hold [brackets]
    _clean_up(run_dir, exc)
    raise SystemExit(code)


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def _job_failed(console, run_dir: Path, exc: Exception) -> None:
    """In a sweep, a failed job is a row of the sweep's summary and the other jobs run on (the sweep exits 1 at the
    end: trainkit.sweep). A signal still stops the whole sweep (`main` then summarises the jobs so far)."""
    import logging

    from hydra.core.hydra_config import HydraConfig

    from trainkit import sweep
    from trainkit.errors import UserError

    if getattr(exc, "exit_code", 1) != 1:
        _fail(console, run_dir, exc)  # says so and raises SystemExit(130 or 143)
    if isinstance(exc, UserError):
        error = str(exc)
    else:  # a bug or a crash in one job: its traceback goes to the console and the job's train.log
        error = f"{type(exc).__name__}: {exc}"
        logging.getLogger("trainkit").error("job %s failed", HydraConfig.get().job.num, exc_info=exc)
    console.print(f"[bold red]error:[/bold red] job {HydraConfig.get().job.num} failed; the sweep goes on: ", end="")
    console.print(error, markup=False)
    sweep.record_failure(run_dir, error)
    return None  # not a number: an Optuna sweep records the trial as failed


def _load(target: str):
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


# What the last Hydra command returned or raised, for `run` (the Python API) to hand back.
_OUTCOME: dict[str, Any] = {}


def _task_function(command: Command, api: bool = False):
    def task(cfg):
        from rich.console import Console

        from trainkit.errors import UserError

        console = Console(highlight=False, soft_wrap=True)  # lines stay whole in logs and pipes
        run_dir = _run_dir()
        try:
            result = _load(command.target)(cfg, run_dir, console)
        except Exception as exc:
            if _multirun():
                return _job_failed(console, run_dir, exc)
            if api:  # the caller gets the exception itself, not an exit
                if isinstance(exc, UserError):
                    _clean_up(run_dir, exc)
                _OUTCOME["error"] = exc
                return None
            if isinstance(exc, UserError):
                _fail(console, run_dir, exc)
            raise
        _OUTCOME["result"] = result
        # Hydra's sweepers (Optuna) optimise what the task function returns.
        return result.get("best_value") if isinstance(result, dict) else None

    return task


def _completion_command(args: list[str]) -> list[str] | None:
    """Hydra's installed shell completion calls `trainkit -sc query=SHELL` with the typed line in COMP_LINE.
    Complete the subcommand here; past it, drop it from COMP_LINE and let Hydra complete that command."""
    import os

    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if len(words) < 2 or (len(words) == 2 and not line.endswith(" ")):
        prefix = words[1] if len(words) == 2 else ""
        print(" ".join(sorted({c.split()[0] for c in COMMANDS if c.startswith(prefix)})))
        return None
    found = _split_command(words[1:])
    if found is None or COMMANDS[found[0]].config is None:
        return None
    name = found[0]
    os.environ["COMP_LINE"] = line.replace(f" {name}", "", 1)
    return [*name.split(), *args]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return 0
    if args[0] in ("-V", "--version"):
        from trainkit import __version__

        print(f"trainkit {__version__}")
        return 0
    if args[0] in ("-sc", "--shell-completion"):
        completed = _completion_command(args)
        if completed is None:
            return 0
        args = completed
    found = _split_command(args)
    if found is None:
        print(f"trainkit: unknown command {args[0]!r}; the commands are: {', '.join(COMMANDS)}.\n", file=sys.stderr)
        print(usage(), end="", file=sys.stderr)
        return 2
    name, rest = found
    command = COMMANDS[name]
    from trainkit.errors import UserError

    try:
        rest = load_plugins(name, rest)
    except UserError as exc:
        print(f"error: {exc}")
        return getattr(exc, "exit_code", 1)
    if command.config is None:
        return int(_load(command.target)(rest) or 0)
    try:
        rest = _prepare(command, rest)
    except UserError as exc:
        print(f"error: {exc}")
        return getattr(exc, "exit_code", 1)
    _hydra(command, rest, sys.argv[0] if argv is None else "trainkit")
    return 0


def run(name: str, args: list[str]) -> Any:
    """A Hydra command run in this process exactly as `trainkit NAME ARGS` runs it, for the Python API: returns
    what the command returns (train: the summary dict) and raises its error instead of exiting."""
    from trainkit.errors import ConfigError

    command = COMMANDS[name]
    if any(a in ("-m", "--multirun") for a in args):
        raise ConfigError("sweeps (-m) run from the command line: trainkit train -m ...")
    import logging

    args = _prepare(command, load_plugins(name, list(args)))
    _OUTCOME.clear()
    argv = sys.argv
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # Hydra's job logging takes over the root logger
    try:
        _hydra(command, args, "trainkit", api=True)
    except SystemExit as exc:  # Hydra refused the overrides; it has printed why
        if exc.code:
            raise ConfigError(f"trainkit {name} {' '.join(args)}: the overrides do not compose (Hydra's message "
                              f"is printed above).") from None
    finally:
        sys.argv = argv
        for handler in [h for h in root.handlers if h not in handlers]:  # the run's train.log is closed with it
            root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
    if "error" in _OUTCOME:
        raise _OUTCOME.pop("error")
    return _OUTCOME.pop("result", None)


def load_plugins(name: str, args: list[str]) -> list[str]:
    """Import the modules `plugins=[...]` names (and installed entry points), before anything composes a config, so
    their names are known; the line back with `plugins=a` written as the list Hydra's config holds."""
    from trainkit import registry

    registry.COMMAND_LINE = ["trainkit", *name.split(), *args]
    USER_DIRS[:] = [Path(d) for flag, d in zip(["", *args], args) if flag in ("--config-dir", "-cd")]
    USER_DIRS.extend(Path(a.split("=", 1)[1]) for a in args if a.startswith("--config-dir="))
    modules = registry.plugins_arg(args)
    registry.load_plugins(modules)
    listed = f"[{','.join(modules)}]"
    return [f"{a.split('=', 1)[0]}={listed}" if a.lstrip("+~").split("=", 1)[0] == "plugins" and "=" in a else a
            for a in args]


def _prepare(command: Command, rest: list[str]) -> list[str]:
    """The overrides as Hydra gets them: recipe keys made `++` where they change a stored config, the extras a
    line needs checked, and the run directory claimed."""
    if command.recipe_overrides:
        rest = [f"++{a}" if a.startswith(RECIPE_ROOTS) else a for a in rest]
    from trainkit.extras import require_extras

    require_extras(rest, config_dir())
    _preflight(command, rest)
    return _claim_output_dir(command, rest) if _world_size() == 1 else _agree_output_dir(command, rest)


REQUIRED_EXAMPLES = {"ckpt": "outputs/DATE/TIME/checkpoints/best.ckpt (or the run directory)", "input": "test.csv"}
# Flags after which Hydra reads a value, and lines this check leaves to Hydra (sweeps: each job checks itself).
VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-dir", "-cd", "--config-path", "-cp", "--config-name",
               "-cn", "--experimental-rerun", "-sc", "--shell-completion", "--info", "-i")
LEFT_TO_HYDRA = ("-m", "--multirun", "--config-path", "-cp", "--config-name", "-cn",
                 "--help", "-h", "--hydra-help", "-sc", "--shell-completion")


def _preflight(command: Command, rest: list[str]) -> None:
    """Compose the config as Hydra will and check every value before anything is written: Hydra's own errors
    (an unknown key or option, a malformed override) and the values (build.preflight) become one paragraph
    that names the key and the fix; no run directory is made for a line that cannot run."""
    from trainkit.errors import UsageError

    words = [a for i, a in enumerate(rest) if not (i and rest[i - 1] in VALUE_FLAGS)]
    if any(a in LEFT_TO_HYDRA or a.startswith(("--config-path=", "--config-name=")) for a in rest):
        return
    overrides = [a for a in words if not a.startswith("-") and not a.startswith(("hydra.", "hydra/", "+hydra", "~hydra"))]
    for i, word in enumerate(overrides):
        if "=" not in word.lstrip("+~") and not word.startswith("~"):
            before = overrides[i - 1] if i else ""
            hint = (f" If it belongs to the value before it ({before} {word}), that value has a space in it: quote "
                    f"the whole override, e.g. '{before} {word}'." if "=" in before else "")
            raise UsageError(f"{word!r} is not an override (key=value, or group=option).{hint}")
    cfg = _compose(command, overrides)
    from omegaconf import OmegaConf

    missing = [k for k in cfg if OmegaConf.is_missing(cfg, k)]
    if missing:
        name = _name(command)
        examples = " ".join(f"{k}={REQUIRED_EXAMPLES.get(k, 'VALUE')}" for k in missing)
        raise UsageError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required, e.g. "
                         f"trainkit {name} {examples}")
    if command.config == "train":
        from trainkit.build import preflight

        preflight(cfg)


def _compose(command: Command, overrides: list[str]):
    """The config Hydra will compose, or Hydra's complaint as one paragraph (usage errors: exit 2)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from trainkit.errors import ConfigError, UsageError

    _register_schemas()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            searchpath = [f"hydra.searchpath=[{','.join(f'file://{d.resolve()}' for d in USER_DIRS)}]"] * bool(USER_DIRS)
            return compose(config_name=command.config, overrides=[*overrides, *searchpath])
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        said = " ".join(line.strip() for line in str(exc).split("Config search path")[0].splitlines() if line.strip())
        detail = str(cause).split("\n")[0].strip() if cause is not exc else ""
        message = f"{said}{': ' + detail if detail and detail not in said else ''}".replace("..", ".")
        if type(cause).__name__ == "ValidationError":  # a value of the wrong type for its key
            raise ConfigError(f"{message}. Give {_key(cause)} a value of its type (trainkit {_name(command)} --cfg "
                              f"job shows the config).") from None
        raise UsageError(f"{message}. trainkit {_name(command)} --help lists the groups and options; "
                         f"--cfg job prints the composed config.") from None


def _key(exc: Exception) -> str:
    return str(getattr(exc, "full_key", "") or "that key")


def _name(command: Command) -> str:
    return next(name for name, c in COMMANDS.items() if c is command)


def _hydra(command: Command, rest: list[str], prog: str, api: bool = False) -> None:
    import hydra

    _register_schemas()
    sys.argv = [prog, *_flags_first(rest)]
    try:
        app = hydra.main(config_path=str(config_dir()), config_name=command.config, version_base="1.3")
        app(_task_function(command, api))()
    except BaseException:
        _report_stopped_sweep(rest)
        for made in CREATED:  # a run directory Hydra never got to use (its overrides did not compose)
            if made.is_dir() and not any(made.iterdir()):
                made.rmdir()
        raise


def _flags_first(args: list[str]) -> list[str]:
    """Hydra's flags (with their values) before the overrides: its argparse takes no override after a flag, so
    `trainkit train plugins=[m] --config-dir my model=x` works as typed."""
    flags: list[str] = []
    overrides: list[str] = []
    take_value = False
    for arg in args:
        if take_value:
            flags.append(arg)
            take_value = False
        elif arg.startswith("-"):
            flags.append(arg)
            take_value = arg in VALUE_FLAGS
        else:
            overrides.append(arg)
    return [*flags, *overrides]


def _report_stopped_sweep(args: list[str]) -> None:
    """A sweep that ended before Hydra's end-of-sweep callbacks (Ctrl-C, a sweeper's error) still gets its summary of
    the jobs that ran."""
    if not any(a in ("-m", "--multirun") for a in args):
        return
    value = next((a.partition("=")[2] for a in args if a.startswith("hydra.sweep.dir=")), "")
    sweep_dir = Path(value)
    if not value or "${" in value or not sweep_dir.is_dir() or (sweep_dir / "sweep_summary.csv").exists():
        return
    from rich.console import Console

    from trainkit import sweep

    if sweep.job_dirs(sweep_dir):
        sweep.report(sweep_dir, Console(highlight=False, soft_wrap=True))


if __name__ == "__main__":
    raise SystemExit(main())
