"""The package's imports run one way: no module imports (directly or through others) a module that imports it.

Every ``import`` is read from the source with :mod:`ast` — at module level, inside functions and under
``TYPE_CHECKING`` alike — so a cycle hidden by a deferred import is still a cycle. ``from pkg import name``
counts as an import of ``pkg.name`` when that is a module, and of ``pkg`` otherwise (importing from one's own
parent package, ``from . import structure``, does not count as importing the parent's ``__init__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import earlyprune

PACKAGE = Path(earlyprune.__file__).parent
ROOT = "earlyprune"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """``module → modules of the package it imports`` (every import statement anywhere in its source)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
                graph[name].update(t for t in targets if t in modules)
                continue
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not (source == ROOT or source.startswith(ROOT + ".")):
                continue
            ancestor = name == source or name.startswith(source + ".")
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    graph[name].add(sub)
                    if not ancestor:
                        graph[name].add(source)
                elif source in modules:
                    graph[name].add(source)
        graph[name].discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_deferred_imports():
    graph = import_graph()
    assert "earlyprune.graph.groups" in graph["earlyprune.planning.selection"]                # a module-level import
    assert "earlyprune.policies" in graph["earlyprune.training.config"]        # one inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (make one side stop importing the other):\n" + "\n".join(
        " ↔ ".join(c) for c in found)
