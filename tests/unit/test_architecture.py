"""The house rules that a grep can check (see ../shared/STYLE.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src" / "trainkit"


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


def kind_checks(source: str, shapes: bool = True) -> list[str]:
    """Where `source` tests the kind of task, model or dataset: isinstance against a task class, an import of a
    concrete task, a test of module names (`"gan" in task.modules()`), a comparison of a `.name`/`.kind` with a
    literal (`meta.name == "mnist_csv"`), and with `shapes` a decision by the data's shape (`len(meta.in_shape) == 3`:
a report may draw images where samples are images; a command may not decide what a model is)."""
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
            shaped = any(isinstance(n, ast.Attribute) and n.attr in SHAPES for s in sides for n in ast.walk(s))
            if calls_modules and literal:
                found.append(f"line {node.lineno}: tests the names of a task's modules")
            elif named and literal:
                found.append(f"line {node.lineno}: compares a name or kind with a literal")
            elif shaped and shapes:
                found.append(f"line {node.lineno}: decides by the data's shape")
    return found


SHAPES = ("in_shape", "target_shape", "num_outputs")  # what a data set's samples look like: the task's business


def test_the_checker_finds_each_kind_of_kind_check():
    old = '''
from trainkit.tasks.gan import GANTask
if isinstance(task, (GANTask, ClassificationTask)): pass
if "gan" in task.modules(): pass
if meta.name == "mnist_csv" or meta.kind != "classification": pass
if len(meta.in_shape) == 3 or tuple(meta.in_shape) == IN_SHAPE: pass
'''
    assert len(kind_checks(old)) == 7
    assert kind_checks("if task.meta.name != other.meta.name: pass\nx = isinstance(v, float)\n") == []


def test_commands_and_reports_never_test_the_kind_of_task():
    offenders = {str(p.relative_to(SRC)): found for pkg in ("commands", "reports") for p in (SRC / pkg).rglob("*.py")
                 if (found := kind_checks(p.read_text(), shapes=pkg == "commands"))}
    assert offenders == {}


def reader_imports(source: str) -> list[str]:
    """Where `source` imports a particular data reader instead of asking the dataset's registry entry."""
    return [f"line {node.lineno}: imports the reader {node.module}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom) and node.module in READERS]


def _readers() -> set[str]:
    from trainkit import registry

    modules = {e.target.partition(":")[0] for e in registry.DATASETS.entries.values() if isinstance(e.target, str)}
    modules |= {e.inputs.partition(":")[0] for e in registry.DATASETS.entries.values() if isinstance(e.inputs, str)}
    return modules | {"trainkit.data.images", "trainkit.data.index_csv"}  # the readers' shared decoders


READERS = _readers()


def test_the_reader_check_finds_a_reader_import():
    assert "trainkit.data.mnist_csv" in READERS and "trainkit.data.image_folder" in READERS
    assert reader_imports("from trainkit.data.mnist_csv import IN_SHAPE\nfrom trainkit.data.base import Split\n") \
        == ["line 1: imports the reader trainkit.data.mnist_csv"]


def test_commands_never_import_a_particular_reader():
    offenders = {str(p.relative_to(SRC)): found for p in (SRC / "commands").rglob("*.py")
                 if (found := reader_imports(p.read_text()))}
    assert offenders == {}


# --- layers: each package imports only the packages below it (docs/architecture.md draws the same table) -----

LAYERS = [  # top to bottom; a package may import its own layer's packages and every layer below
    {"trainkit", "trainkit.__main__"},
    {"trainkit.api"},
    {"trainkit.cli"},
    {"trainkit.commands"},
    {"trainkit.restore"},
    {"trainkit.build"},
    {"trainkit.trainer"},
    {"trainkit.rundirs", "trainkit.clusters"},
    {"trainkit.logging"},
    {"trainkit.tasks"},
    {"trainkit.engine"},
    {"trainkit.reports"},
    {"trainkit.models", "trainkit.data"},
    {"trainkit.registry", "trainkit.extras", "trainkit.storage"},
    {"trainkit.errors", "trainkit.version"},
]
LAYER = {unit: n for n, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """The layer unit a module belongs to: `trainkit.cli.line` → `trainkit.cli`, `trainkit` → `trainkit`."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def module_name(path: Path) -> str:
    if not path.is_relative_to(SRC.parent):
        return path.stem
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
    return ".".join(parts)


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported trainkit module, at module level) for every import that runs: imports for type annotations
    alone (under `if TYPE_CHECKING:`) are left out."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name, top) for a in child.names if a.name.split(".")[0] == "trainkit")
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - child.level + 1] + [base]).strip(".")
                if base.split(".")[0] == "trainkit":  # `from trainkit.engine import distributed`: a submodule
                    folder = SRC.parent.joinpath(*base.split("."))
                    found.extend((child.lineno, f"{base}.{a.name}" if (folder / a.name).is_dir()
                                  or (folder / f"{a.name}.py").is_file() else base, top) for a in child.names)
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner)

    visit(ast.parse(path.read_text()), True)
    return found


def layer_violations(graph: dict[str, list[tuple[int, str, bool]]]) -> list[str]:
    wrong = []
    for module, found in graph.items():
        for line, imported, _ in found:
            here, there = unit_of(module), unit_of(imported)
            if there not in LAYER:
                wrong.append(f"{module}:{line} imports {imported}, which is in no layer: add it to LAYERS")
            elif here not in LAYER:
                wrong.append(f"{module} is in no layer: add {here} to LAYERS")
            elif LAYER[there] < LAYER[here]:
                wrong.append(f"{module}:{line} imports {imported}, a layer above it")
            elif there == "trainkit.commands" and here not in ("trainkit.cli", "trainkit.commands"):
                wrong.append(f"{module}:{line} imports {imported}: only cli/ and commands/ import commands/")
    return wrong


def cycles(graph: dict[str, list[tuple[int, str, bool]]]) -> list[list[str]]:
    """Import cycles among modules, through the imports that run when a module is imported (module level), and
    among the layer units through every import."""
    found = []
    module_edges = {m: {i for _, i, top in f if top and i in graph and i != m} for m, f in graph.items()}
    unit_edges: dict[str, set[str]] = {}
    for m, f in graph.items():
        unit_edges.setdefault(unit_of(m), set()).update(unit_of(i) for _, i, _ in f if unit_of(i) != unit_of(m))
    for edges in (module_edges, unit_edges):
        state: dict[str, int] = {}

        def walk(node: str, path: list[str]) -> None:
            state[node] = 1
            for nxt in sorted(edges.get(node, ())):
                if state.get(nxt) == 1:
                    found.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
                elif nxt not in state:
                    walk(nxt, path + [nxt])
            state[node] = 2

        for node in sorted(edges):
            if node not in state:
                walk(node, [node])
    return found


def import_graph() -> dict[str, list[tuple[int, str, bool]]]:
    return {module_name(p): imports(p) for p in sorted(SRC.rglob("*.py"))}


def test_the_layer_check_finds_an_import_upwards_and_a_cycle(tmp_path):
    graph = {"trainkit.engine.loop": [(3, "trainkit.trainer", False)],
             "trainkit.logging.trackers": [(5, "trainkit.commands.runs", True)],
             "trainkit.data.a": [(1, "trainkit.data.b", True)], "trainkit.data.b": [(2, "trainkit.data.a", True)],
             "trainkit.cli.line": [(1, "trainkit.engine.loop", False)]}
    wrong = layer_violations(graph)
    assert wrong == ["trainkit.engine.loop:3 imports trainkit.trainer, a layer above it",
                     "trainkit.logging.trackers:5 imports trainkit.commands.runs, a layer above it"]
    assert ["trainkit.data.a", "trainkit.data.b", "trainkit.data.a"] in cycles(graph)
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from trainkit.trainer import T\n"
                      "def f():\n    from trainkit import clusters\n")
    assert [i for _, i, _ in imports(source)] == ["trainkit.clusters"]


def test_every_import_follows_the_layers_and_none_cycles():
    graph = import_graph()
    assert "trainkit.cli.line" in graph and "trainkit.rundirs.claim" in graph
    assert layer_violations(graph) == []
    assert cycles(graph) == []
