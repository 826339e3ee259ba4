"""The package's import graph: no cycles, and nothing imports the command line (hazefree.cli).

The graph is read from the source with ``ast`` (no module is imported): every ``import`` and
``from ... import`` statement, at module level or inside a function, absolute or relative. An
import of a package's submodule (``from . import models``) is an edge to that submodule; an
import of a name from a module is an edge to the module. The implicit import of a module's parent
packages is not an edge (else every package's ``__init__`` would close a cycle with its modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hazefree"

# The entry points of the command line: ``python -m hazefree`` runs cli.main.
CLI_ENTRY_POINTS = {"hazefree.__main__"}


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file for every module of the package under ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that module ``name`` (file ``path``) imports."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from X import y`: the submodule X.y if there is one, else the module X
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            # `import hazefree.io.reading` names the module; `import hazefree.x.y` of a
            # non-module y falls back to its longest known prefix
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    names = module_names(root)
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, sorted(c)) for c in components]


def _one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth first)."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if w not in previous:
                previous[w] = v
                queue.append(w)
    raise AssertionError(f"{component} is not a cycle")


# --------------------------------------------------------------------------------------------- the rules


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_nothing_imports_the_command_line():
    graph = import_graph()
    importers = sorted(name for name, targets in graph.items() if "hazefree.cli" in targets)
    assert set(importers) <= CLI_ENTRY_POINTS, f"modules importing hazefree.cli: {importers}"


# ------------------------------------------------------------------------------- the reader itself


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    "files, expected",
    [
        # a function-level relative import closes the circle
        ({"__init__.py": "", "a.py": "from .b import f\n", "b.py": "def f():\n    from .a import g\n"},
         [["pkg.a", "pkg.b", "pkg.a"]]),
        # `from .. import sub` from a subpackage, and an absolute import
        ({"__init__.py": "", "sub/__init__.py": "", "sub/x.py": "from .. import y\n", "y.py": "import pkg.sub.x\n"},
         [["pkg.sub.x", "pkg.y", "pkg.sub.x"]]),
        # three modules
        ({"__init__.py": "", "a.py": "from . import b\n", "b.py": "from .c import z\n", "c.py": "from pkg.a import q\n"},
         [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]),
        # a package's __init__ importing its modules, which import a sibling: no cycle
        ({"__init__.py": "from .a import f\n", "a.py": "from .b import g\n", "b.py": "import os\n"}, []),
    ],
)
def test_reader_finds_cycles(tmp_path, files, expected):
    assert cycles(import_graph(_package(tmp_path, files))) == expected


def test_reader_sees_the_command_line_import(tmp_path):
    root = _package(tmp_path, {"__init__.py": "", "cli.py": "", "w.py": "def f():\n    from .cli import _x\n"})
    assert import_graph(root)["pkg.w"] == {"pkg.cli"}
