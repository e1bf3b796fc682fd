"""`trainkit list [plugins=[...]]`: every name a config can choose, by kind, with where it comes from (trainkit
itself or the plugin module that registered it), trackers and cluster environments included. The CLI has loaded the
plugins the line names before this runs."""

from __future__ import annotations

import textwrap

from trainkit import registry
from trainkit.errors import UsageError

KIND_TITLES = {"model": "models", "dataset": "datasets", "task": "tasks", "optimizer": "optimizers",
               "scheduler": "schedulers", "tracker": "trackers", "cluster environment": "cluster environments"}


def main(argv: list[str]) -> int:
    extra = [a for a in argv if a.lstrip("+").split("=", 1)[0] != "plugins"]
    if extra:
        raise UsageError(f"trainkit list takes only plugins=[module,...], not {' '.join(extra)}.")
    rows = registry.listing()
    for kind, title in KIND_TITLES.items():
        found = [(name, origin if origin == registry.BUILTIN else f"plugin {origin}", code)
                 for row_kind, name, origin, code in rows if row_kind == kind]
        group = registry.REGISTRIES[kind]
        how = f"choose with {group.group}=NAME" if group.group else "detected; or name one with trainer.cluster=NAME"
        print(f"{title} ({group.key}; {how}):")
        widths = [max(len(row[i]) for row in found) for i in range(2)]
        for name, origin, code in found:
            print(f"  {name:<{widths[0]}}  {origin:<{widths[1]}}  {code}")
        print()
    from trainkit.models.torchvision import architectures

    names = architectures()
    print(f"torchvision architectures (model=torchvision model.arch=NAME), {len(names)}:")
    print(textwrap.fill(", ".join(names), width=118, initial_indent="  ", subsequent_indent="  "))
    print()
    loaded = ", ".join(f"{m} ({how.rstrip('= :')})" for m, how in registry.LOADED.items()) or "none"
    print(f"plugins loaded: {loaded}")
    return 0
