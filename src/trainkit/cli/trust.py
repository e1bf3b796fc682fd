"""No config chooses code. Hydra imports and calls what a config names under `hydra.*` (`_target_` of callbacks,
launchers, sweepers and anything nested in them; logging's `()`, `class` and `ext://` values), and a config may name
plugin modules (`plugins:`), which trainkit imports. A config may come from anyone: a colleague's --config-dir, a
sweep directory's multirun.yaml that `trainkit sweep resume` replays. So every place in a composed config where code
is named must hold what trainkit's and Hydra's own shipped configs (and the installed Hydra plugins) hold there, and
the only plugins are those the command line names (or installed entry points). Checked before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from trainkit.errors import ConfigError, UsageError

# Keys whose value Hydra or Python's logging imports: instantiate's target, logging.config's factory and class.
CODE_KEYS = ("_target_", "()", "class")
LOGGING_NAMED = ("handlers", "formatters", "filters", "loggers")  # their entries have names of the user's choosing
# Flags that make Hydra read a config trainkit does not check: another primary config, or a pickled one (pickle runs
# code when loaded).
REFUSED_FLAGS = {"--config-path": "-cp", "--config-name": "-cn", "--experimental-rerun": None}
# Environment variables (hydra.job.env_set) that choose what a process loads: code by another door.
LOADER_VARIABLES = ("PATH", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONEXECUTABLE",
                    "PYTHONINSPECT", "BASH_ENV", "ENV", "PERL5OPT", "NODE_OPTIONS")
LOADER_PREFIXES = ("LD_", "DYLD_")
SAFE_STREAMS = ("ext://sys.stdout", "ext://sys.stderr")  # logging's console streams: nothing new is imported


def refuse_flags(inv: Any) -> None:
    """--config-path, --config-name and --experimental-rerun are refused: trainkit's commands compose their own
    primary config (configs/<command>.yaml), which the checks below know; your own groups come with --config-dir."""
    for flag, short in REFUSED_FLAGS.items():
        used = [a for a in inv.args if a in (flag, short) or a.startswith(f"{flag}=")]
        if used:
            instead = ("a pickled config runs code when it is loaded; run the command again with its overrides "
                       "(.hydra/overrides.yaml lists them)" if flag == "--experimental-rerun" else
                       f"trainkit {inv.name} composes configs/{inv.command.config}.yaml; add config groups of your own "
                       f"with --config-dir DIR (then choose them: model=my_net), or a recipe with experiment=NAME")
            raise UsageError(f"{used[0]}: trainkit does not take this Hydra flag: {instead}.")


def refuse_searchpath(inv: Any) -> None:
    """hydra.searchpath=[pkg://module] imports that module to look for configs in it: before any config is composed,
    only folders (file://DIR, or a plain path) may be added to the search path."""
    for override in inv.overrides():
        key, _, value = override.lstrip("+~").partition("=")
        if key.strip() != "hydra.searchpath":
            continue
        for entry in (e.strip().strip("'\"") for e in value.strip().strip("[]").split(",")):
            if "://" in entry and not entry.startswith("file://"):
                raise ConfigError(f"hydra.searchpath: {entry} would import the module {entry.split('://', 1)[1]!r} "
                                  f"to look for configs in it, and a config may not choose code. Add a folder of "
                                  f"configs instead: --config-dir DIR.")


def check(hydra: Any, cfg: Any, inv: Any) -> None:
    """Refuse a composed config (`hydra`: its hydra node; `cfg`: the rest) that names code trainkit did not ship, or
    plugin modules the command line did not name."""
    from omegaconf import OmegaConf

    from trainkit import registry

    tree = OmegaConf.to_container(hydra, resolve=False) if OmegaConf.is_config(hydra) else hydra
    allowed = shipped()
    for path, value in code_names(tree or {}, ("hydra",)):
        if (pattern(path), value) not in allowed and not (path[-1] != "_target_" and _safe_logging(value)):
            raise ConfigError(
                f"{'.'.join(path)}={value}: a config may not choose code for Hydra to import and run (trainkit takes "
                f"{path[-1]!r} keys under hydra.* only as its own shipped configs set them). It came from "
                f"{_origin(path, inv)}; remove it. Code of your own is a plugin module that you name on the command "
                f"line: plugins=[my_module] (docs/extending.md).")
    env = (tree or {}).get("job", {}).get("env_set") or {}
    for name in env:
        if str(name) in LOADER_VARIABLES or str(name).startswith(LOADER_PREFIXES):
            raise ConfigError(f"hydra.job.env_set.{name}: a config may not set {name}, which chooses what processes "
                              f"load (code by another door); set it in your shell instead. It came from "
                              f"{_origin(('hydra', 'job', 'env_set', str(name)), inv)}.")
    named = set(registry.plugins_arg(inv.args))
    plugins = cfg.get("plugins") if hasattr(cfg, "get") else None
    stored = [str(p) for p in (plugins or [])] if not isinstance(plugins, str) else [plugins]
    extra = [m for m in stored if m not in named and m not in registry.LOADED]
    if extra:
        listed = ",".join(sorted({*named, *extra}))
        raise ConfigError(f"plugins: a config names the plugin module{'s' * (len(extra) > 1)} {', '.join(extra)}, "
                          f"which the command line did not: a config never loads code by itself. If you trust "
                          f"{'them' if len(extra) > 1 else 'it'}, name {'them' if len(extra) > 1 else 'it'}: "
                          f"{' '.join(inv.line)} plugins=[{listed}]")


def code_names(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path, value) of every key that names code (CODE_KEYS) and every `ext://` value under `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = (*path, str(key))
            # A logging handler's stream is looked up as code (ext://module.attr), and anything else in it breaks
            # every log record; it must be one that ships too.
            stream = str(key) == "stream" and "handlers" in path and any(p.endswith("logging") for p in path)
            if (str(key) in CODE_KEYS or stream) and not isinstance(value, (dict, list)):
                yield here, str(value)
            else:
                yield from code_names(value, here)
    elif isinstance(node, list):
        for value in node:
            yield from code_names(value, (*path, "[]"))
    elif isinstance(node, str) and node.strip().startswith("ext://"):
        yield path, node


def pattern(path: tuple[str, ...]) -> tuple[str, ...]:
    """A path with the names a logging config chooses itself (handlers.console) as `*`: handlers.*.class."""
    out = list(path)
    for i in range(1, len(out) - 1):
        if out[i] in LOGGING_NAMED and any(p.endswith("logging") for p in out[:i]):
            out[i + 1] = "*"
    return tuple(out)


@lru_cache(maxsize=1)
def shipped() -> frozenset[tuple[tuple[str, ...], str]]:
    """Every (path pattern, value) that names code in the configs trainkit ships and in Hydra's own and its installed
    plugins' config groups under hydra/ (not the user's --config-dir folders)."""
    import yaml
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.utils import create_config_search_path
    from hydra.core.object_type import ObjectType
    from omegaconf import OmegaConf

    from trainkit.cli.compose import config_dir

    repo = ConfigRepository(create_config_search_path(f"file://{config_dir()}"))
    found: set[tuple[tuple[str, ...], str]] = set()

    def add(node: Any, package: tuple[str, ...]) -> None:
        found.update((pattern(p), v) for p, v in code_names(node, package))

    def walk(group: str) -> None:
        for option in repo.get_group_options(group, ObjectType.CONFIG):
            loaded = repo.load_config(f"{group}/{option}")
            if loaded is None:
                continue
            package = loaded.header.get("package") or group.replace("/", ".")
            node = OmegaConf.to_container(loaded.config, resolve=False)
            add({k: v for k, v in node.items() if k != "defaults"}, tuple(package.split(".")))
        for sub in repo.get_group_options(group, ObjectType.GROUP):
            walk(f"{group}/{sub}")

    walk("hydra")
    for path in config_dir().rglob("*.yaml"):  # trainkit's primary configs and presets: their hydra: node
        if "hydra" not in path.relative_to(config_dir()).parts[:1]:
            node = yaml.safe_load(path.read_text()) or {}
            if isinstance(node, dict) and isinstance(node.get("hydra"), dict):
                add(node["hydra"], ("hydra",))
    return frozenset(found)


def _safe_logging(value: str) -> bool:
    """A logging class of the standard library (logging.FileHandler, logging.handlers.RotatingFileHandler, ...) or a
    console stream: it imports nothing that is not Python's own, and calls no factory."""
    import logging
    import logging.handlers

    if value in SAFE_STREAMS:
        return True
    module, _, name = value.rpartition(".")
    owner = {"logging": logging, "logging.handlers": logging.handlers}.get(module)
    found = getattr(owner, name, None) if owner is not None else None
    return isinstance(found, type) and issubclass(found, (logging.Handler, logging.Formatter, logging.Filter))


def _origin(path: tuple[str, ...], inv: Any) -> str:
    """Where a key most likely came from: the command line if an override names it, else a config file."""
    dotted = ".".join(path)
    typed = [a for a in inv.overrides() if a.lstrip("+~").split("=", 1)[0] in (dotted, ".".join(path[:-1]))]
    if typed:
        return f"the command line ({typed[0]})"
    dirs = ", ".join(str(d) for d in inv.config_dirs)
    return f"a config file ({'one of --config-dir ' + dirs + ', or ' if dirs else ''}a group option the line chose)"
