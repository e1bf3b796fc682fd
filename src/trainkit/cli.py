"""`trainkit <command> [overrides]`: picks the command and hands the rest of the line to Hydra.

`trainkit --help` imports neither torch nor Hydra: a command's modules are imported only when it runs.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

USAGE = """usage: trainkit <command> [hydra overrides and flags]

commands:
  train   train a model: trainkit train model=cnn data=cifar10 trainer.max_epochs=5
          sweeps:        trainkit train -m optimizer=sgd,adam model=mlp,cnn
  eval    evaluate a checkpoint on its test split: trainkit eval ckpt=outputs/.../checkpoints/best.ckpt

Every command takes Hydra's flags: --help (the command's config groups and options), --cfg job
(print the composed config), -m/--multirun, --config-dir DIR (your own config groups), --info.
Run `trainkit <command> --help` for a command's options.
"""

COMMANDS = ("train", "eval")
# For commands that work on a stored run config, `data.x=1` changes that config: it may name keys that
# the command's own config does not have, so it is handed to Hydra as `++data.x=1` (add or override).
RECIPE_ROOTS = ("data.", "model.", "optimizer.", "scheduler.", "trainer.", "seed=")


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


def _fail(console, run_dir: Path, message: str, started: bool) -> None:
    console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    if not started and run_dir.exists() and not (run_dir / "checkpoints").exists():
        shutil.rmtree(run_dir, ignore_errors=True)  # no run directory left half-made
    raise SystemExit(1)


def _task_function(command: str):
    def task(cfg):
        from rich.console import Console

        from trainkit.build import ConfigError
        from trainkit.data.base import DataError
        from trainkit.engine.checkpoint import CheckpointError
        from trainkit.engine.loop import NonFiniteLossError

        console = Console(highlight=False, soft_wrap=True)  # lines stay whole in logs and pipes
        run_dir = _run_dir()
        try:
            if command == "train":
                from trainkit.commands.train import train

                summary = train(cfg, run_dir, console)
                return summary.get("best_value")
            from trainkit.commands.evaluate import run_eval

            run_eval(cfg, run_dir, console)
        except (ConfigError, DataError, CheckpointError) as exc:
            _fail(console, run_dir, str(exc), started=False)
        except NonFiniteLossError as exc:
            _fail(console, run_dir, str(exc), started=True)
        return None

    task.__name__ = command
    return task


def _completion_command(args: list[str]) -> list[str] | None:
    """Hydra's installed shell completion calls `trainkit -sc query=SHELL` with the typed line in COMP_LINE.
    Complete the subcommand here; past it, drop it from COMP_LINE and let Hydra complete that command."""
    import os

    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if len(words) < 2 or (len(words) == 2 and not line.endswith(" ")):
        prefix = words[1] if len(words) == 2 else ""
        print(" ".join(c for c in COMMANDS if c.startswith(prefix)))
        return None
    if words[1] not in COMMANDS:
        return None
    os.environ["COMP_LINE"] = line.replace(f" {words[1]}", "", 1)
    return [words[1], *args]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
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
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"trainkit: unknown command {command!r}; the commands are: {', '.join(COMMANDS)}.\n", file=sys.stderr)
        print(USAGE, end="", file=sys.stderr)
        return 2
    if command == "eval":
        rest = [f"++{a}" if a.startswith(RECIPE_ROOTS) else a for a in rest]

    import hydra

    _register_schemas()
    sys.argv = [sys.argv[0] if argv is None else "trainkit", *rest]
    hydra.main(config_path=str(config_dir()), config_name=command, version_base="1.3")(_task_function(command))()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
