"""The modules of tapir/ and plugins/ import each other without a cycle.

The graph is built from the source with ``ast``: every import counts, the
lazy ones inside functions too (a lazy import hides a cycle, it does not
break it), at module granularity (``from tapir.config import X`` is an edge
to the module ``tapir.config``, ``from tapir.pipeline import recipe`` one to
``tapir.pipeline.recipe``), relative imports resolved. Cycles are the
strongly connected components of more than one module (Tarjan).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Cycles other branches break; each entry is one strongly connected component.
# This list must be empty at merge time: drop an entry once its cycle is gone
# (the test fails while an entry names a cycle that no longer exists).
KNOWN_ELSEWHERE: list[frozenset[str]] = []


def package_roots(root: Path) -> list[Path]:
    """tapir/ and every plugin package under plugins/."""
    plugins = sorted(p for p in (root / "plugins").iterdir() if (p / "__init__.py").is_file())
    return [root / "tapir", *plugins]


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the packages."""
    out: dict[str, Path] = {}
    for package in package_roots(root):
        for path in package.rglob("*.py"):
            parts = list(path.relative_to(package.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def owner(name: str, known: dict[str, Path]) -> str | None:
    """The module of ours that NAME (a module or a name in one) lives in."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imported_names(module: str, path: Path) -> list[str]:
    """Every dotted name MODULE imports (``from a.b import c`` gives ``a.b.c``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package[: len(package) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    graph: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        for name in imported_names(module, path):
            target = owner(name, known)
            if target and target != module:
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
                found.append(frozenset(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def describe(component: frozenset[str], graph: dict[str, set[str]]) -> str:
    edges = [f"{a} -> {b}" for a in sorted(component) for b in sorted(graph[a] & component)]
    return f"{len(component)} modules: " + "; ".join(edges)


def test_the_graph_is_built_from_every_package():
    graph = import_graph(ROOT)
    assert "tapir.config" in graph and "tapir_mtbench" in graph and "tapir_litellm.backend" in graph
    # a lazy import inside a function is an edge; so is a relative one
    assert "tapir.pipeline.stages.train" in graph["tapir.pipeline.stages"]


def test_tarjan_finds_a_cycle_and_ignores_a_chain():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles(capsys):
    graph = import_graph(ROOT)
    found = cycles(graph)
    with capsys.disabled():
        edges = sum(len(v) for v in graph.values())
        print(f"\nimport graph: {len(graph)} modules, {edges} edges, {len(found)} cycles")
        for component in found:
            print("  cycle:", describe(component, graph))
    unexpected = [c for c in found if c not in KNOWN_ELSEWHERE]
    assert not unexpected, "import cycles:\n" + "\n".join(describe(c, graph) for c in unexpected)
    gone = [sorted(c) for c in KNOWN_ELSEWHERE if c not in found]
    assert not gone, f"these cycles are gone: drop them from KNOWN_ELSEWHERE: {gone}"
