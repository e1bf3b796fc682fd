"""The house rules that a grep can check (see ../shared/STYLE.md)."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "trainkit"


def test_nothing_below_build_imports_hydra_or_omegaconf():
    offenders = [
        str(p.relative_to(SRC))
        for pkg in ("engine", "tasks", "models", "data", "logging")
        for p in (SRC / pkg).rglob("*.py")
        if re.search(r"^\s*(import|from)\s+(hydra|omegaconf)\b", p.read_text(), re.M)
    ]
    assert offenders == []


def test_no_instantiate_of_config_targets():
    """A stored config never chooses code: components come from registries by name."""
    for p in SRC.rglob("*.py"):
        assert "instantiate(" not in p.read_text(), p


def test_every_module_opens_with_a_docstring():
    missing = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if not p.read_text().lstrip().startswith('"""')]
    assert missing == []
