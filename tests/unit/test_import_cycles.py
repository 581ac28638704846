"""No import cycles among the modules of brokerd, brokerd_protocol and brokerd_client.

A cycle means two rooms cannot be read, tested or replaced one without the
other, and that which of them finishes importing first depends on who imports
first. So every ``import`` statement is an arrow: at module level, inside a
function, or under ``if TYPE_CHECKING:`` (a type-only import still says "this
room knows that one", and is one refactor away from a runtime one).

The graph is read with ``ast`` from the sources, so nothing is imported and
nothing third-party is needed. ``from pkg import name`` points at ``pkg.name``
when that is a module, else at ``pkg``; importing ``a.b.c`` does not add
arrows to the parent packages ``a`` and ``a.b`` (every submodule would
otherwise form a cycle with a package ``__init__`` that re-exports it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Import name -> the directory holding its sources.
PACKAGES = {
    "brokerd": ROOT / "brokerd",
    "brokerd_protocol": ROOT / "protocol" / "brokerd_protocol",
    "brokerd_client": ROOT / "clients" / "brokerd_client",
}

Graph = dict[str, set[str]]


def module_files() -> dict[str, Path]:
    """Every module of the three packages by dotted name."""
    found: dict[str, Path] = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> Iterator[str]:
    """The dotted names one import statement asks for (targets, maybe not ours)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        # Relative: a package's own name is its anchor, a module's is its parent.
        anchor = module.split(".")
        if not is_package:
            anchor.pop()
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, node.module] if node.module else anchor)
    else:
        base = node.module or ""
    yield base
    for alias in node.names:
        yield f"{base}.{alias.name}"


def import_graph(files: dict[str, Path]) -> Graph:
    """Module -> the modules of ours it imports, statements anywhere in its body."""
    graph: Graph = {name: set() for name in files}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names = list(_imported(node, module, is_package))
            if isinstance(node, ast.ImportFrom):
                # ``from base import x``: the submodule base.x if it is one, else base.
                base, members = names[0], names[1:]
                targets = [m for m in members if m in files]
                if len(targets) < len(members):
                    targets.append(base)
            else:
                targets = names
            graph[module].update(t for t in targets if t in files and t != module)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan,
    iterative), each as a shortest loop through its first module by name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(_loop(graph, c) for c in components)


def _loop(graph: Graph, component: list[str]) -> list[str]:
    """A shortest path from the component's first module back to itself."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{component} is not strongly connected")


def describe(found: list[list[str]]) -> str:
    return "\n".join(" -> ".join(loop) for loop in found)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_modules_import_each_other_without_cycles(package: str) -> None:
    found = [
        loop
        for loop in cycles(import_graph(module_files()))
        if any(m == package or m.startswith(package + ".") for m in loop)
    ]
    assert not found, f"import cycles touching {package}:\n{describe(found)}"


# --- the checker itself ----------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for name, text in files.items():
        parts = name.split(".")
        is_package = text.startswith("# package")
        path = root.joinpath(*parts, "__init__.py") if is_package else root.joinpath(*parts)
        if not is_package:
            path = path.with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        paths[name] = path
    return paths


def test_type_only_and_function_local_imports_count_as_arrows(tmp_path: Path) -> None:
    files = _write(
        tmp_path,
        {
            "pkg": "# package\n",
            "pkg.a": "import typing\nif typing.TYPE_CHECKING:\n    from pkg.b import B\n",
            "pkg.b": "def f() -> None:\n    from . import c\n",
            "pkg.c": "import pkg.a\n",
        },
    )
    assert cycles(import_graph(files)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_relative_imports_resolve_from_packages_and_modules(tmp_path: Path) -> None:
    files = _write(
        tmp_path,
        {
            "pkg": "# package\nfrom .sub import thing\n",
            "pkg.sub": "# package\nfrom .leaf import x\nfrom .. import other\n",
            "pkg.sub.leaf": "from ..other import y\n",
            "pkg.other": "from pkg.sub import leaf\n",
        },
    )
    graph = import_graph(files)
    assert graph == {
        "pkg": {"pkg.sub"},
        "pkg.sub": {"pkg.sub.leaf", "pkg.other"},
        "pkg.sub.leaf": {"pkg.other"},
        "pkg.other": {"pkg.sub.leaf"},
    }
    assert cycles(graph) == [["pkg.other", "pkg.sub.leaf", "pkg.other"]]


def test_a_package_reexporting_its_submodules_is_not_a_cycle(tmp_path: Path) -> None:
    files = _write(
        tmp_path,
        {
            "pkg": "# package\nfrom pkg.a import A\nfrom pkg.b import B\n",
            "pkg.a": "class A: ...\n",
            "pkg.b": "from pkg.a import A\n",
        },
    )
    assert cycles(import_graph(files)) == []
