"""Shell completion: Hydra's installed completion calls `trainkit -sc query=SHELL` with the typed line in COMP_LINE.
The subcommand is completed here; past it, the subcommand is dropped from COMP_LINE and Hydra completes that
command's config groups and keys."""

from __future__ import annotations

import os

from trainkit.cli.table import COMMANDS, split_command


def completion_command(args: list[str]) -> list[str] | None:
    """The line Hydra is to complete, or None when this printed the completion itself (a subcommand's name)."""
    line = os.environ.get("COMP_LINE", "")
    if "://" in line and "file://" not in line:  # a package search path: Hydra would import it to complete
        return None
    words = line.split()
    if len(words) < 2 or (len(words) == 2 and not line.endswith(" ")):
        prefix = words[1] if len(words) == 2 else ""
        print(" ".join(sorted({c.split()[0] for c in COMMANDS if c.startswith(prefix)})))
        return None
    found = split_command(words[1:])
    if found is None or COMMANDS[found[0]].config is None:
        return None
    name = found[0]
    os.environ["COMP_LINE"] = line.replace(f" {name}", "", 1)
    return [*name.split(), *args]
