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
    assert "torchvision_compat" in graph["corruptions"]  # blur's torchvision import sits inside the function
    assert {"corruptions", "domain_names"} <= graph["domains"]


def test_no_circle_between_data_and_corruptions():
    """Corruptions are tensor functions and names resolve in domains: neither reaches back to data."""
    graph = core_imports()
    for low in ("corruptions", "mnistc", "domains"):
        assert "data" not in reachable(graph, low), f"{low} reaches data: {sorted(reachable(graph, low))}"
    assert "data" not in reachable(graph, "data")


# What ``search validate`` imports from the core: none of it may reach torch (issue 17, section 5).
TORCH_FREE = ("config", "catalog", "registry", "domain_names", "infos", "metric_names", "steps")


def _imports_torch(module: str) -> bool:
    for node in ast.walk(ast.parse((CORE / f"{module}.py").read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        if any(n == "torch" or n.startswith(("torch.", "torchvision")) for n in names):
            return True
    return False


def test_the_validation_modules_reach_no_torch():
    graph = core_imports()
    for start in TORCH_FREE:
        reached = {start} | reachable(graph, start)
        assert not [m for m in reached if _imports_torch(m)], (start, sorted(m for m in reached if _imports_torch(m)))
    assert _imports_torch("trainer")  # the check can fail


def test_every_registering_module_is_a_component():
    """The registry loads the modules in ``COMPONENTS`` (by name, as plugins) before any registry is read, so a
    module that registers but is missing there would leave its entries out wherever nothing else imports it."""
    from trainables.core.registry import COMPONENTS

    def registers(path: Path) -> bool:
        return any(isinstance(n, ast.ImportFrom) and n.module == "registry" and n.level == 1
                   and {a.name for a in n.names} & {"register", "declare"} for n in ast.walk(ast.parse(path.read_text())))

    assert {p.stem for p in CORE.glob("*.py") if p.stem != "__init__" and registers(p)} == set(COMPONENTS)
    assert not core_imports()["registry"]  # the registry imports none of them: they import it
