"""The package's layers: models and data never import the engine, the engine never imports the tools built on it, and
no import circle runs through the engine. Imports are read from the source (``ast``), function-level ones included,
since a lazy import is a dependency all the same."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lemore"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The ``lemore`` modules that ``path`` imports anywhere in its body (``from lemore.x import y`` counts as
    ``lemore.x.y`` when that is a module, else ``lemore.x``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # lemore.models.lemore.AxisMix -> lemore.models.lemore
                name = name.rpartition(".")[0]
            if name.startswith("lemore"):
                out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {m: imports_of(p, known) - {m} for m, p in files.items()}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


GRAPH = import_graph()
ENGINE = sorted(m for m in GRAPH if m.startswith("lemore.engine."))
# The tools built on the engine: what imports it, directly or not (the CLI and the package root aside, which name
# everything).
TOOLS = sorted(m for m in GRAPH if not m.startswith("lemore.engine") and m not in ("lemore", "lemore.cli", "lemore.__main__")
               and any(e in reachable(GRAPH, m) for e in ENGINE))


def test_the_graph_is_read():
    assert "lemore.registry" in GRAPH["lemore.engine.train"] and "lemore.data.loader" in GRAPH["lemore.engine.train"]
    assert {"lemore.launch", "lemore.study", "lemore.viz"} <= set(TOOLS)


@pytest.mark.parametrize("layer", ["lemore.models", "lemore.data", "lemore.config", "lemore.registry",
                                   "lemore.metrics", "lemore.checkpoint", "lemore.system"])
def test_lower_layers_never_reach_the_engine(layer):
    for m in [m for m in GRAPH if m == layer or m.startswith(layer + ".")]:
        bad = sorted(x for x in reachable(GRAPH, m) if x.startswith("lemore.engine"))
        assert not bad, f"{m} imports the engine: {bad}"


@pytest.mark.parametrize("module", ENGINE)
def test_the_engine_never_imports_the_tools_built_on_it(module):
    bad = sorted(reachable(GRAPH, module) & set(TOOLS))
    assert not bad, f"{module} imports {bad}, which import the engine"


@pytest.mark.parametrize("module", ENGINE)
def test_no_import_circle_through_the_engine(module):
    assert module not in reachable(GRAPH, module), f"{module} imports itself through {sorted(GRAPH[module])}"


def test_a_circle_is_caught():
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert "a" in reachable(graph, "a") and "c" not in reachable(graph, "c")


def test_the_machine_layer_imports_nothing_of_the_package():
    assert GRAPH["lemore.system"] == set()
