"""What a command line says, read once: the command, the plugins to load, the user's config directories, and the
overrides as Hydra is to get them (`plugins=a` as a list, `data.x=1` as `++data.x=1` where a stored recipe is changed,
Hydra's flags before the overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trainkit.cli.table import COMMANDS, Command

# Flags after which Hydra reads a value.
VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-dir", "-cd", "--config-path", "-cp", "--config-name",
               "-cn", "--experimental-rerun", "-sc", "--shell-completion", "--info", "-i")
# Flags with which nothing runs: no run directory is claimed for them.
NO_RUN_FLAGS = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "-sc", "--shell-completion",
                "--resolve", "-p", "--package")


@dataclass
class Invocation:
    """One `trainkit NAME ARGS`, typed in a shell or passed to the Python API."""

    name: str
    args: list[str]  # what follows the command's name, as Hydra is to get it
    line: list[str]  # the command as typed (`trainkit eval ckpt=...`), for messages that say what to type
    config_dirs: list[Path] = field(default_factory=list)  # the user's --config-dir folders
    created: set[Path] = field(default_factory=set)  # folders it made (resolved): the only ones an error may remove
    out_dir: Path | None = None  # its run directory, or a sweep's directory (-m), once claimed
    launcher: str = ""  # a sweep's launcher (hydra.launcher._target_), once its line was checked
    had: set[str] | None = None  # what a run or sweep directory the user already had held: the rest is this line's

    @property
    def command(self) -> Command:
        return COMMANDS[self.name]

    @property
    def multirun(self) -> bool:
        """-m, or hydra.mode=MULTIRUN, which Hydra takes as the same."""
        return any(a in ("-m", "--multirun") or a.lstrip("+").replace(" ", "") == "hydra.mode=MULTIRUN"
                   for a in self.args)

    @property
    def runs_nothing(self) -> bool:
        """--help, --cfg job and the like: Hydra prints and exits, nothing is written."""
        return any(a in NO_RUN_FLAGS or a.startswith("--cfg=") for a in self.args)

    def overrides(self) -> list[str]:
        """The key=value words of the line, without Hydra's flags and their values."""
        return [a for i, a in enumerate(self.args) if not a.startswith("-") and not (i and self.args[i - 1] in VALUE_FLAGS)]


def read(name: str, args: list[str]) -> Invocation:
    """The line of command `name`, with the modules that `plugins=[...]` names (and installed entry points) imported
    first, so their components' names are known when the config is composed."""
    from trainkit import registry

    typed = ["trainkit", *name.split(), *args]
    args = list(args)
    dirs = [Path(d) for flag, d in zip(["", *args], args) if flag in ("--config-dir", "-cd")]
    dirs += [Path(a.split("=", 1)[1]) for a in args if a.startswith("--config-dir=")]
    modules = registry.plugins_arg(args)
    registry.load_plugins(modules)
    listed = f"[{','.join(modules)}]"
    args = [f"{a.split('=', 1)[0]}={listed}" if a.lstrip("+~").split("=", 1)[0] == "plugins" and "=" in a else a
            for a in args]
    roots = COMMANDS[name].open_roots
    if roots:
        args = [f"++{a}" if a.startswith(roots) else a for a in args]
    return Invocation(name, args, typed, dirs)


def flags_first(args: list[str]) -> list[str]:
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
