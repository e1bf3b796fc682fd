"""The Hydra adapter: trainkit's configs/ directory, the schemas and generated options Hydra composes with, and the
pre-flight check that composes a line as Hydra will and checks every value before anything is written. Hydra's own
errors (an unknown key or option, a malformed override) become one paragraph that names the key and the fix."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from trainkit.cli.line import Invocation

# Flags with which Hydra prints something and runs nothing (completion, help): left to Hydra, unchecked.
HYDRA_ONLY = ("--help", "-h", "--hydra-help", "-sc", "--shell-completion")
REQUIRED_EXAMPLES = {"ckpt": "outputs/DATE/TIME/checkpoints/best.ckpt (or the run directory)", "input": "test.csv"}


def config_dir() -> Path:
    """configs/ inside the installed wheel, else the source tree's top-level configs/."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here / "configs", here.parents[1] / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise SystemExit("trainkit: its configs/ directory is missing from the installation; reinstall trainkit.")


def register_schemas(config_dirs: list[Path] = ()) -> None:
    """The trainer's schema (typed keys), a generated option for every registered component without a YAML file,
    and the resolver that names sweep jobs' directories. Hydra hands registered resolvers to its joblib and submitit
    workers with the rest of its state."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from trainkit.engine.settings import TrainerSettings
    from trainkit.rundirs.claim import job_dir_name

    store = ConfigStore.instance()
    store.store(group="trainer", name="schema", node=TrainerSettings)
    _store_registered_options(store, config_dirs)
    OmegaConf.register_new_resolver("trainkit_job_dir", job_dir_name, replace=True)


def _store_registered_options(store: Any, config_dirs: list[Path]) -> None:
    """Every registered component without a YAML file of its own (a plugin's, torch's schedulers) gets a generated
    option in its config group, its keys from its signature: `model=my_net`, `scheduler=ExponentialLR`."""
    from trainkit import registry

    for group in registry.REGISTRIES.values():
        if group.group is None:  # chosen by detection, not by a config group (cluster environments)
            continue
        for entry in group.entries.values():
            # A YAML file of the same name is the option (Hydra would take the node as its schema, and warn).
            if not any((folder / group.group / f"{entry.name}.yaml").is_file() for folder in (config_dir(), *config_dirs)):
                store.store(group=group.group, name=entry.name, node=registry.option_node(entry),
                            provider="trainkit" if not entry.plugin else entry.origin)


def compose(inv: Invocation, overrides: list[str], with_hydra: bool = False) -> Any:
    """The config Hydra will compose for the invocation's command (with its `hydra` node if `with_hydra`), or Hydra's
    complaint as one paragraph (usage errors: exit 2)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from trainkit.errors import ConfigError, UsageError

    register_schemas(inv.config_dirs)
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose(config_name=inv.command.config, overrides=_with_searchpath(inv, overrides),
                                 return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        said = " ".join(line.strip() for line in str(exc).split("Config search path")[0].splitlines() if line.strip())
        detail = str(cause).split("\n")[0].strip() if cause is not exc else ""
        message = f"{said}{': ' + detail if detail and detail not in said else ''}".replace("..", ".")
        if type(cause).__name__ == "ValidationError":  # a value of the wrong type for its key
            key = str(getattr(cause, "full_key", "") or "that key")
            raise ConfigError(f"{message}. Give {key} a value of its type (trainkit {inv.name} --cfg job shows the "
                              f"config).") from None
        from trainkit.cli.hints import missing_option

        hint = missing_option(inv, message)
        if "LexerNoViableAlt" in message and any(not a.isascii() for a in overrides):
            hint += (" A value with characters beyond ASCII (or spaces, or Hydra's special characters) must be "
                     "quoted: key='value' (in a shell: \"key='value'\").")
        raise UsageError(f"{message}.{hint} trainkit {inv.name} --help lists the groups and options; --cfg job prints "
                         f"the composed config.") from None
    except (ValueError, TypeError) as exc:  # Hydra's defaults list meets a group override whose value is no name
        if not _raised_in_hydra(exc):
            raise
        bad = [o for o in overrides if _group_value(inv, o)] or list(overrides)
        raise UsageError(f"{' '.join(bad)}: a config group takes the name of one of its options, or a list of names, "
                         f"e.g. logger=tensorboard or logger=[tensorboard,csv] (Hydra said: {exc}). trainkit "
                         f"{inv.name} --help lists the groups and their options.") from None


def _raised_in_hydra(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}hydra{os.sep}" in tb.tb_frame.f_code.co_filename


def _group_value(inv: Invocation, override: str) -> bool:
    """Whether `override` sets a config group (data=, logger=, hydra/launcher=, ...) to something that is not a name
    or a list of names (null, a number, a nested list)."""
    key, _, value = override.lstrip("+~").partition("=")
    folders = [config_dir(), *inv.config_dirs]
    if not any((Path(folder) / key).is_dir() for folder in folders):
        return False
    if value.strip().lower() in ("null", "none", "true", "false"):  # YAML reads these as values, not names
        return True
    return re.fullmatch(r"[A-Za-z_][\w./-]*|\[\s*([A-Za-z_][\w./-]*\s*,?\s*)*\]", value.strip()) is None


def _with_searchpath(inv: Invocation, overrides: list[str]) -> list[str]:
    """The overrides, with the user's --config-dir folders on Hydra's search path (as Hydra's app puts them), beside
    any hydra.searchpath the line gives itself."""
    dirs = [f"file://{d.resolve()}" for d in inv.config_dirs]
    if not dirs:
        return list(overrides)
    own = [o for o in overrides if o.lstrip("+").startswith("hydra.searchpath=")]
    rest = [o for o in overrides if o not in own]
    typed = [p.strip() for o in own for p in o.split("=", 1)[1].strip().strip("[]").split(",") if p.strip()]
    return [*rest, f"hydra.searchpath=[{','.join([*typed, *dirs])}]"]


def split_hydra(cfg: Any) -> tuple[Any, Any]:
    """A config composed with its `hydra` node: (the command's config, the hydra node)."""
    from omegaconf import open_dict

    hydra = cfg.hydra
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, hydra


def preflight(inv: Invocation) -> Any:
    """Compose the line's config as Hydra will and check every value, and that no config chooses code
    (trainkit.cli.trust); the composed config, or None where the line is Hydra's to read (--help and the like) or a
    sweep (every job of it checked: trainkit.cli.jobs). No run directory exists yet."""
    from trainkit.cli import trust
    from trainkit.errors import UsageError
    from trainkit.extras import require_extras

    trust.refuse_flags(inv)
    trust.refuse_searchpath(inv)  # before anything composes (--help too): Hydra imports a pkg:// path's module
    _one_mode(inv)
    require_extras(inv.args, config_dir())
    if any(a in HYDRA_ONLY for a in inv.args):
        return None
    overrides = inv.overrides()
    for i, word in enumerate(overrides):
        if "=" not in word.lstrip("+~") and not word.startswith("~"):
            before = overrides[i - 1] if i else ""
            hint = (f" If it belongs to the value before it ({before} {word}), that value has a space in it: quote "
                    f"the whole override, e.g. '{before} {word}'." if "=" in before else "")
            raise UsageError(f"{word!r} is not an override (key=value, or group=option).{hint}")
    if inv.multirun:
        from trainkit.cli import jobs

        jobs.check_sweep(inv, overrides)
        return None
    cfg = check_job(inv, overrides)
    from trainkit.cli.jobs import refuse_search_without_multirun

    refuse_search_without_multirun(inv, cfg.hydra_node)
    return cfg.config


def _one_mode(inv: Invocation) -> None:
    """Hydra runs one of: a run, a sweep (-m), --cfg, --info or shell completion; two of them are a usage error."""
    from trainkit.errors import UsageError

    modes = {"-m": ("-m", "--multirun"), "--cfg": ("--cfg", "-c"), "--info": ("--info", "-i"),
             "--shell-completion": ("-sc", "--shell-completion")}
    used = [m for m, flags in modes.items() if any(a in flags or a.startswith(tuple(f"{f}=" for f in flags))
                                                   for a in inv.args)]
    if len(used) > 1:
        raise UsageError(f"{' and '.join(used)} cannot be used together: give one of -m (a sweep), --cfg (print the "
                         f"config), --info. To check every job of a sweep without running it: trainkit {inv.name} -m "
                         f"... --check.")


class Checked:
    """A job's composed config and its hydra node, both checked."""

    def __init__(self, config: Any, hydra_node: Any) -> None:
        self.config, self.hydra_node = config, hydra_node


def check_job(inv: Invocation, overrides: list[str]) -> Checked:
    """Compose one job's config with its hydra node and check it: no code chosen by a config, every required key
    given, and (train) every value."""
    from omegaconf import OmegaConf

    from trainkit.cli import trust
    from trainkit.errors import UsageError

    cfg, hydra = split_hydra(compose(inv, overrides, with_hydra=True))
    trust.check(hydra, cfg, inv)
    missing = [k for k in cfg if OmegaConf.is_missing(cfg, k)]
    if missing:
        examples = " ".join(f"{k}={REQUIRED_EXAMPLES.get(k, 'VALUE')}" for k in missing)
        raise UsageError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required, e.g. "
                         f"trainkit {inv.name} {examples}")
    if inv.command.config == "train":
        from trainkit.build import preflight as check_values

        check_values(cfg)
    return Checked(cfg, hydra)
