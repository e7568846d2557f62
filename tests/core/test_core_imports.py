"""The core's import graph: every import in trainables/core (function-level ones included) as an edge."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "trainables" / "core"
PACKAGE = "trainables.core"


def core_imports() -> dict[str, set[str]]:
    """Module -> the core modules it imports, wherever in the file the import stands."""
    modules = {p.stem for p in CORE.glob("*.py")} - {"__init__"}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m in modules:
        for node in ast.walk(ast.parse((CORE / f"{m}.py").read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level == 1 or base.startswith(PACKAGE):
                    base = base.removeprefix(PACKAGE).lstrip(".")
                    if base:
                        graph[m].add(base.split(".")[0])
                    else:  # from . import a, b
                        graph[m].update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                graph[m].update(a.name.removeprefix(PACKAGE + ".").split(".")[0]
                                for a in node.names if a.name.startswith(PACKAGE + "."))
        graph[m] &= modules
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_walk_sees_function_level_imports():
    graph = core_imports()
    assert "tv" in graph["corruptions"]  # blur's torchvision import sits inside the function
    assert {"corruptions", "registry"} <= graph["domains"]


def test_no_circle_between_data_and_corruptions():
    """Corruptions are tensor functions and names resolve in domains: neither reaches back to data."""
    graph = core_imports()
    for low in ("corruptions", "mnistc", "domains"):
        assert "data" not in reachable(graph, low), f"{low} reaches data: {sorted(reachable(graph, low))}"
    assert "data" not in reachable(graph, "data")
