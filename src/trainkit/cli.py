"""`trainkit <command> [overrides]`: picks the command and hands the rest of the line to Hydra.

`trainkit --help` imports neither torch nor Hydra: a command's modules are imported only when it runs.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path



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
}
RECIPE_ROOTS = ("data.", "model.", "optimizer.", "scheduler.", "trainer.", "seed=")
SWEEP_DIR = "outputs/multirun/%Y-%m-%d/%H-%M-%S"
NO_RUN_FLAGS = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "-sc", "--shell-completion",
                "--resolve", "-p", "--package")


def _claim_output_dir(command: Command, args: list[str]) -> list[str]:
    """Two runs started in the same second must not share a directory: claim a fresh one (atomic
    mkdir, `_1`, `_2`... when taken) and hand it to Hydra, unless the user chose one or nothing runs."""
    if command.run_dir is None or any(a in NO_RUN_FLAGS or a.startswith("--cfg=") for a in args):
        return args
    multirun = any(a in ("-m", "--multirun") for a in args)
    key, pattern = ("hydra.sweep.dir", SWEEP_DIR) if multirun else ("hydra.run.dir", command.run_dir)
    if any(a.startswith(f"{key}=") for a in args):
        return args
    import time

    from trainkit.rundirs import claim

    return [*args, f"{key}={claim(time.strftime(pattern))}"]


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

    ConfigStore.instance().store(group="trainer", name="schema", node=TrainerSettings)


def _run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _fail(console, run_dir: Path, exc: Exception) -> None:
    code = getattr(exc, "exit_code", 1)
    label = "[bold yellow]stopped:[/bold yellow]" if code != 1 else "[bold red]error:[/bold red]"
    console.print(f"{label} {exc}", highlight=False, soft_wrap=True)
    if not getattr(exc, "keeps_run_dir", False) and not any(run_dir.glob("checkpoints/*.ckpt")):
        shutil.rmtree(run_dir, ignore_errors=True)  # no run directory left half-made
    raise SystemExit(code)


def _load(target: str):
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _task_function(command: Command):
    def task(cfg):
        from rich.console import Console

        from trainkit.errors import UserError

        console = Console(highlight=False, soft_wrap=True)  # lines stay whole in logs and pipes
        run_dir = _run_dir()
        try:
            result = _load(command.target)(cfg, run_dir, console)
        except UserError as exc:
            _fail(console, run_dir, exc)
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
    if command.config is None:
        return int(_load(command.target)(rest) or 0)
    if command.recipe_overrides:
        rest = [f"++{a}" if a.startswith(RECIPE_ROOTS) else a for a in rest]
    rest = _claim_output_dir(command, rest)

    import hydra

    _register_schemas()
    sys.argv = [sys.argv[0] if argv is None else "trainkit", *rest]
    hydra.main(config_path=str(config_dir()), config_name=command.config, version_base="1.3")(_task_function(command))()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
