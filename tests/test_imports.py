"""The package's import graph, read from the source with ``ast`` (imports inside functions included): no cycle, and
no project import inside a function unless it keeps a heavy library lazy and says so with a ``# lazy:`` comment."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "recipe"
# Function-level imports in modules owned by other work streams (the integrator drops these once they are moved to
# the module top there); listed so that the rule holds everywhere else.
PENDING: set[tuple[str, str]] = set()  # function-level project imports still to move (none left)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    """Project modules an import statement loads (``from recipe.config import core`` -> ``recipe.config.core``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "recipe"]
    if node.level or not node.module or node.module.split(".")[0] != "recipe":
        return []
    subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
    return subs or [node.module]


def imports(path: Path) -> list[tuple[str, bool, str]]:
    """``(target, inside_a_function, source_line)`` for every project import of a file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((t, in_function, lines[child.lineno - 1]) for t in targets(child))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse("\n".join(lines)), False)
    return found


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_the_graph_covers_the_package():
    assert {"recipe.run.orchestrator", "recipe.store.rundir", "recipe.eval.evaluate", "recipe.eval.report",
            "recipe.cli"} <= set(GRAPH)
    assert "recipe.store.rundir" in {t for t, _, _ in GRAPH["recipe.run.orchestrator"]}
    assert "recipe.config.core" in {t for t, _, _ in GRAPH["recipe.cli"]}


def test_no_import_cycle():
    edges = {name: {t for t, _, _ in found if t in MODULES and t != name} for name, found in GRAPH.items()}
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges))}"


def test_function_level_project_imports_are_documented_lazy_ones():
    bad = [f"{name}: {line.strip()}" for name, found in GRAPH.items() for target, inside, line in found
           if inside and "# lazy:" not in line and (name, target) not in PENDING]
    assert not bad, "project imports inside functions need a '# lazy: <why>' comment (or belong at the top):\n" + \
        "\n".join(bad)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
