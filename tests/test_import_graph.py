"""The house's imports: no module imports, even lazily inside a function, one that imports it back.

A lazy import that dodges a circle hides two modules that want a third one above (or below) them;
this walks every import in the project's packages, function bodies included, and finds none.

Two imports are made by name and are no edges here. The registry loads the modules its plugin table
``registry.COMPONENTS`` names (as entry points are loaded): they import the registry and it uses nothing
of theirs (tests/core/test_core_imports.py checks it imports none of them and that the table is whole).
``trainables/core/__init__.py`` finds its exported names in their modules on first use (PEP 562), so that
importing one module of the core does not import all of it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "spaces", "trainables", "analysis", "records")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _edges(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (``from pkg import mod`` counts as ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    """The walk must find imports inside functions, or the test below could never fail."""
    (tmp_path / "a.py").write_text("def f():\n    from .b import x\n")
    edges = _edges("pkg.a", tmp_path / "a.py", {"pkg.a", "pkg.b"})
    assert edges == {"pkg.b"}
    assert _cycles({"pkg.a": edges, "pkg.b": {"pkg.a"}}) == [["pkg.a", "pkg.b"]]


def test_no_import_circle_anywhere():
    modules = _modules()
    known = set(modules)
    graph = {name: _edges(name, path, known) for name, path in modules.items()}
    # A package's __init__ re-exports its modules; a module importing its own package's __init__ back
    # would be a circle too, so nothing is dropped from the graph.
    assert not _cycles(graph), _cycles(graph)
