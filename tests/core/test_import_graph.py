"""No import cycles between xaiready's modules, function-level imports included.

Every module under src/xaiready is parsed with ``ast`` (nothing is imported) and each import of an
xaiready module becomes an edge of a directed graph: top-level, function- and method-level, absolute and
relative. ``from pkg import name`` counts as importing ``pkg.name`` where that is a module, else ``pkg``;
a package stands for its ``__init__``. Imports under ``if TYPE_CHECKING:`` never run and are skipped.
Imports by string (``importlib.import_module``) are not seen.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

Graph = dict[str, dict[str, int]]  # module -> {imported module: line of the first such import}


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file, for every module under ``root/package`` (a package is its ``__init__``)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """(line, dotted name, imported names) for each import statement, at any depth."""

    def __init__(self):
        self.found: list[tuple[int, str, list[str]]] = []
        self.package = ""  # the importing module's package, set by ``imports_of``

    def visit_If(self, node: ast.If):
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import):
        for alias in node.names:
            self.found.append((node.lineno, alias.name, []))

    def visit_ImportFrom(self, node: ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            anchor = ".".join(parts[:len(parts) - (node.level - 1)])
            base = f"{anchor}.{base}" if base else anchor
        self.found.append((node.lineno, base, [alias.name for alias in node.names]))


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a known module (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph(root: Path, package: str) -> Graph:
    modules = module_files(root, package)
    graph: Graph = {}
    for name, path in modules.items():
        visitor = _Imports()
        visitor.package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        edges = graph.setdefault(name, {})
        for line, base, names in visitor.found:
            for imported in names or [None]:  # `import a.b` names nothing beyond the module
                submodule = f"{base}.{imported}"
                target = submodule if imported and submodule in modules else _resolve(base, modules)
                if target is not None and target != name:
                    edges.setdefault(target, line)
    return graph


def find_cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components (Tarjan) of more than one module, each shown as the shortest
    cycle through each of its modules, deduplicated; every cycle starts at its smallest name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    cycles: set[tuple[str, ...]] = set()
    for component in components:
        for start in component:
            cycle = _shortest_cycle(graph, start, component)
            first = cycle.index(min(cycle))
            cycles.add(tuple(cycle[first:] + cycle[:first]))
    return [list(c) for c in sorted(cycles)]


def _shortest_cycle(graph: Graph, start: str, within: set[str]) -> list[str]:
    """Breadth first from ``start`` back to itself, inside one strongly connected component."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph.get(v, {})):
                if w not in within:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                if w not in came_from:
                    came_from[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{start} is on no cycle")  # cannot happen inside a component


def describe(cycle: list[str], graph: Graph, root: Path) -> str:
    """``a -> b -> a``, then where each import is."""
    lines = [" -> ".join(cycle + cycle[:1])]
    for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        where = module_files(root, a.split(".")[0])[a].relative_to(root)
        lines.append(f"    {where}:{graph[a][b]} imports {b}")
    return "\n".join(lines)


def test_xaiready_has_no_import_cycles():
    graph = import_graph(SRC, "xaiready")
    assert len(graph) > 20 and sum(map(len, graph.values())) > 50  # it did parse the package
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(describe(c, graph, SRC) for c in cycles)


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    files = {
        "pkgx/__init__.py": "",
        "pkgx/a.py": "import pkgx.sub\nfrom . import b\nfrom .d import value\n",
        "pkgx/b.py": "import os\n\n\ndef f():\n    from .sub.c import thing\n    return thing\n",
        "pkgx/d.py": ("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from . import a\n"
                      "else:\n    from .sub import c\nvalue = 1\n"),
        "pkgx/sub/__init__.py": "",
        "pkgx/sub/c.py": "class K:\n    def m(self):\n        from .. import a\n        return a\n\n\nthing = 2\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))

    graph = import_graph(tmp_path, "pkgx")
    assert {m: set(edges) for m, edges in graph.items()} == {
        "pkgx": set(),
        "pkgx.a": {"pkgx.sub", "pkgx.b", "pkgx.d"},
        "pkgx.b": {"pkgx.sub.c"},  # function level, relative, an attribute of a module
        "pkgx.d": {"pkgx.sub.c"},  # the TYPE_CHECKING import of pkgx.a is skipped, its else is not
        "pkgx.sub": set(),
        "pkgx.sub.c": {"pkgx.a"},  # method level, `from .. import a` of a submodule
    }
    cycles = find_cycles(graph)
    assert cycles == [["pkgx.a", "pkgx.b", "pkgx.sub.c"], ["pkgx.a", "pkgx.d", "pkgx.sub.c"]]
    assert describe(cycles[0], graph, tmp_path).splitlines() == [
        "pkgx.a -> pkgx.b -> pkgx.sub.c -> pkgx.a",
        "    pkgx/a.py:2 imports pkgx.b",
        "    pkgx/b.py:5 imports pkgx.sub.c",
        "    pkgx/sub/c.py:3 imports pkgx.a",
    ]
