"""The house rules that a grep can check (see ../shared/STYLE.md)."""

from __future__ import annotations

import ast
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


# --- a task owns its whole life: commands and reports never ask what kind of task they run --------------------

TASK_CLASSES = {node.name for p in (SRC / "tasks").glob("*.py")
                for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.ClassDef)}


def kind_checks(source: str) -> list[str]:
    """Where `source` tests the kind of task, model or dataset: isinstance against a task class, an import of a
    concrete task, a test of module names (`"gan" in task.modules()`), a comparison of a `.name`/`.kind` with a
    literal (`meta.name == "mnist_csv"`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
            names = {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node.args[1])
                     if isinstance(n, (ast.Name, ast.Attribute))}
            if names & TASK_CLASSES:
                found.append(f"line {node.lineno}: isinstance against {sorted(names & TASK_CLASSES)}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trainkit.tasks.") \
                and node.module != "trainkit.tasks.base":
            found.append(f"line {node.lineno}: imports the concrete task module {node.module}")
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            calls_modules = any(isinstance(s, ast.Call) and getattr(s.func, "attr", None) == "modules" for s in sides)
            literal = any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides)
            named = any(isinstance(s, ast.Attribute) and s.attr in ("name", "kind") for s in sides)
            if calls_modules and literal:
                found.append(f"line {node.lineno}: tests the names of a task's modules")
            elif named and literal:
                found.append(f"line {node.lineno}: compares a name or kind with a literal")
    return found


def test_the_checker_finds_each_kind_of_kind_check():
    old = '''
from trainkit.tasks.gan import GANTask
if isinstance(task, (GANTask, ClassificationTask)): pass
if "gan" in task.modules(): pass
if meta.name == "mnist_csv" or meta.kind != "classification": pass
'''
    assert len(kind_checks(old)) == 5
    assert kind_checks("if task.meta.name != other.meta.name: pass\nx = isinstance(v, float)\n") == []


def test_commands_and_reports_never_test_the_kind_of_task():
    offenders = {str(p.relative_to(SRC)): found for pkg in ("commands", "reports") for p in (SRC / pkg).rglob("*.py")
                 if (found := kind_checks(p.read_text()))}
    assert offenders == {}
