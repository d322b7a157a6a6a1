"""Which project modules a module imports, read from the source with ``ast``: nothing is imported, so a
build can find the files behind each cached step without loading torch, and a test can check that the
project's modules import one another without a cycle.

Every ``import`` of a project package (``monitor``, ``training``, ``export``, ``bench``) counts, also inside
functions (the build's steps import their trainers lazily); ``if TYPE_CHECKING:`` blocks do not (they never
run). A package's ``__init__`` runs before any of its modules, so closures include it with the imports it
makes at module level.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from monitor.paths import REPO_ROOT

PROJECT_PACKAGES = ("monitor", "training", "export", "bench")


def module_file(name: str, root: Path = REPO_ROOT) -> Path | None:
    """``monitor.gate`` -> root/monitor/gate.py (or a package's __init__.py); None when not a project module."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST, module_level_only: bool) -> Iterable[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _import_nodes(ast.Module([child], []), module_level_only))
        elif module_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        else:
            yield from _import_nodes(node, module_level_only)


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = name.split(".")
    base = parts if is_package else parts[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def direct_imports(name: str, root: Path = REPO_ROOT, module_level_only: bool = False) -> frozenset[str]:
    """Project modules that ``name``'s source imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    path = module_file(name, root)
    if path is None:
        return frozenset()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in _import_nodes(tree, module_level_only):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _absolute(node, name, path.name == "__init__.py")
            targets = [f"{base}.{alias.name}" if module_file(f"{base}.{alias.name}", root) else base
                       for alias in node.names]
        found.update(t for t in targets if t != name and module_file(t, root))
    return frozenset(found)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_closure(roots: Iterable[str], root: Path = REPO_ROOT) -> list[str]:
    """``roots`` and every project module they import, directly or not, with their packages; sorted."""
    seen: set[str] = set()
    pending = [(name, False) for name in roots]
    while pending:
        name, module_level_only = pending.pop()
        if name in seen or module_file(name, root) is None:
            continue
        seen.add(name)
        pending += [(parent, True) for parent in _parents(name)]
        pending += [(dep, False) for dep in direct_imports(name, root, module_level_only)]
    return sorted(seen)


def project_modules(root: Path = REPO_ROOT) -> list[str]:
    names = []
    for package in PROJECT_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def import_cycles(root: Path = REPO_ROOT) -> list[list[str]]:
    """Groups of project modules that import one another in a circle (Tarjan's strongly connected components)."""
    graph = {name: sorted(direct_imports(name, root)) for name in project_modules(root)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, []):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for name in graph:
        if name not in index:
            visit(name)
    return cycles
