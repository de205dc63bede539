"""The project's import graph: no module of ours imports itself through others."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import PROJECT_ROOT

# The packages whose modules must not import each other in a circle.
PACKAGES = ("serving", "training")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of PACKAGES -> the modules of PACKAGES it imports, wherever the import
    stands (at the top, in a function, under ``if TYPE_CHECKING:``). Package ``__init__``
    modules are left out: importing ``a.b`` runs ``a/__init__.py`` first, for every module."""
    paths = {
        module_name(p): p for package in PACKAGES for p in (PROJECT_ROOT / package).rglob("*.py")
    }
    graph = {}
    for name, path in paths.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {
            other
            for other in imported & set(paths)
            if other != name and paths[other].name != "__init__.py"
        }
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles found by a depth-first walk, each as a path back to its start."""
    found, done, path = [], set(), []

    def visit(name: str) -> None:
        path.append(name)
        for other in sorted(graph[name]):
            if other in path:
                found.append([*path[path.index(other) :], other])
            elif other not in done:
                visit(other)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        if name not in done:
            visit(name)
    return found


def test_the_walk_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c", "a"]]


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert "serving.model_server.predict" in graph  # the walk sees the modules
    assert circles(graph) == []
