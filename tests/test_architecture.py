"""The layout's rules, checked on the source: who may import whom, no import cycles, and small
functions and modules (ARCHITECTURE.md says why)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "planner", "service", "executor", "asymtp")
# package -> first-party packages it may import (itself always allowed)
MAY_IMPORT: dict[str, set[str]] = {
    "protocol": set(),
    "planner": {"protocol"},
    "service": {"protocol", "planner"},
    "executor": {"protocol"},
    "asymtp": {"protocol", "planner", "service", "executor"},
}
# Third-party imports a package must never make, even lazily.
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "protocol": {"mlx", "mlx_lm", "ortools", "networkx", "fastapi", "uvicorn"},
    "planner": {"mlx", "mlx_lm", "fastapi", "uvicorn"},
    "service": {"mlx", "mlx_lm"},
    "executor": {"ortools"},
}
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (lazy ones included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def first_party_graph() -> nx.DiGraph:
    mods = modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        for imported in imports_of(name, path):
            if imported in mods and imported != name:
                g.add_edge(name, imported)
    return g


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_the_layout_allows(package: str) -> None:
    wrong = []
    for name, path in modules().items():
        if name.split(".")[0] != package:
            continue
        for imported in sorted(imports_of(name, path)):
            top = imported.split(".")[0]
            if top in PACKAGES and top != package and top not in MAY_IMPORT[package]:
                wrong.append(f"{name} imports {imported}")
            if top in FORBIDDEN_THIRD_PARTY.get(package, set()):
                wrong.append(f"{name} imports {imported}")
    assert not wrong, f"{package} may import only {sorted(MAY_IMPORT[package])}: " + "; ".join(
        wrong
    )


def test_no_import_cycles() -> None:
    # A module importing its own package's __init__ is not a cycle worth reporting.
    g = first_party_graph()
    g.remove_edges_from([(a, b) for a, b in list(g.edges) if a.startswith(b + ".")])
    cycles = list(nx.simple_cycles(g))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join([*c, c[0]]) for c in cycles)


def test_functions_and_modules_stay_small() -> None:
    long = []
    for name, path in modules().items():
        text = path.read_text()
        lines = text.count("\n") + 1
        if lines > MAX_MODULE_LINES:
            long.append(f"module {name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name} (line {node.lineno}): {n} lines")
    assert not long, (
        f"over {MAX_FUNCTION_LINES} lines a function or {MAX_MODULE_LINES} a module: "
        + "; ".join(long)
    )
