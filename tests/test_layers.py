"""The layering, read from the imports: what stands on what, so that it stays that way.

    ring/  supervisor/  keeper/  contract/  common/      shared layers
    balancer/ (Part 1)          db/ (Part 2)  shard/    stand beside each other on them
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "services" / "dslab"


def imported_packages(module: Path) -> set[str]:
    """The dslab subpackages (or top-level modules) a module imports, relative or absolute."""
    package = list(module.relative_to(PACKAGE).parts[:-1])  # [] for dslab/x.py, ["db"] for db/x.py
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            if target:
                found.add(target[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dslab."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("dslab.")}
    return found


def imports_of(package: str) -> set[str]:
    return set().union(*(imported_packages(m) for m in (PACKAGE / package).rglob("*.py"))) - {package}


@pytest.mark.parametrize("package, forbidden", [
    ("balancer", {"db", "shard", "lab"}),
    ("db", {"balancer", "shard", "lab"}),
    ("shard", {"balancer", "db", "lab"}),
    ("keeper", {"balancer", "db", "shard", "lab", "contract"}),
    ("common", {"balancer", "db", "shard", "lab", "keeper", "ring", "supervisor"}),
    ("contract", {"balancer", "db", "shard", "keeper", "lab"}),
    ("ring", {"balancer", "db", "shard", "keeper", "supervisor", "lab", "contract"}),
    ("faults", {"balancer", "shard", "lab", "keeper"}),
])
def test_layers_do_not_lean_on_each_other(package, forbidden):
    assert imports_of(package) & forbidden == set()


def test_the_router_is_pure():
    tree = ast.parse((PACKAGE / "keeper" / "routing.py").read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "upstream" not in modules and "httptools" not in modules, modules


def test_the_history_checker_is_pure():
    """history, linearizable and checks: the standard library and each other, no I/O."""
    for name in ("history", "linearizable", "checks"):
        tree = ast.parse((PACKAGE / "faults" / f"{name}.py").read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert modules <= {"__future__", "collections", "collections.abc", "dataclasses", "enum",
                           "itertools", "math"}, (name, modules)


def test_the_checker_sees_an_import_across_layers():
    assert "keeper" in imports_of("db") and "contract" in imports_of("shard")
    assert "keeper" in imports_of("balancer") and "ring" in imports_of("balancer")

