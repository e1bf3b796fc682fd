"""Hints that make Hydra's complaints about a line precise where trainkit knows more: an option that Hydra cannot find
because it is a plugin's, and the plugin is not loaded (a run directory, like a checkpoint, never loads code)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# Config groups whose options components register (registry kinds), by group.
KINDS = {"model": "model", "data": "dataset", "task": "task", "optimizer": "optimizer", "scheduler": "scheduler",
         "logger": "tracker"}


def missing_option(inv: Any, message: str) -> str:
    """" ..." to add to Hydra's "Could not find 'model/my_net'": which plugin module has it and the line that loads
    it, where the line resumes a run that used it; else how to load a plugin. "" for other complaints."""
    found = re.search(r"Could not find '([\w/]+)/([^'/]+)'", message)
    if found is None or found.group(1) not in KINDS:
        return ""
    group, name = found.groups()
    kind = KINDS[group]
    spec = next((a.split("=", 1)[1] for a in inv.overrides() if a.lstrip("+").startswith(("resume=", "ckpt="))), "")
    modules, run_dir = _stored_plugins(spec.strip("'\""))
    if modules:
        typed = [a for a in inv.line if not a.lstrip("+~").startswith("plugins=")]
        listed = ",".join(modules)
        return (f" {run_dir} was trained with the {kind} {name!r} of the plugin module{'s' * (len(modules) > 1)} "
                f"{', '.join(modules)}, which is not loaded (a run directory never loads code by itself). Load it: "
                f"{' '.join(typed)} plugins=[{listed}] (where {modules[0]} is importable: its folder is the working "
                f"directory or on PYTHONPATH, or its package is installed).")
    return (f" If {name!r} is a {kind} that a plugin module of yours registers, load the module: "
            f"{' '.join(inv.line)} plugins=[my_module] (trainkit list plugins=[my_module] lists what it registers).")


def _stored_plugins(spec: str) -> tuple[list[str], Path | None]:
    """The plugin modules the run that `spec` (a run directory or a checkpoint in one) was trained with, as its
    .hydra/config.yaml says; ([], None) where there is none to read."""
    if not spec or spec == "auto":
        return [], None
    path = Path(spec)
    for candidate in (path, *path.parents)[:3]:
        config = candidate / ".hydra" / "config.yaml"
        if config.is_file():
            try:
                import yaml

                stored = yaml.safe_load(config.read_text()) or {}
            except (OSError, ValueError, yaml.YAMLError):
                return [], None
            plugins = stored.get("plugins") if isinstance(stored, dict) else None
            modules = [str(m) for m in plugins] if isinstance(plugins, list) else []
            return modules, candidate
    return [], None
