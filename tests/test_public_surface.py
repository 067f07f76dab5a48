"""The public surface the notebooks stand on: every name a notebook imports or calls from
``dslab`` exists and is exported (``__all__``), so a refactor that moves or renames one fails
here, in seconds, not in the middle of ``make report``."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def code_of(notebook: Path) -> ast.Module:
    cells = json.loads(notebook.read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return ast.parse("\n".join(line for line in source.splitlines()
                               if not line.lstrip().startswith(("%", "!"))))


def dslab_uses(tree: ast.Module) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """(local name -> the dslab module or attribute it names, {(local module, attribute)})."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dslab"):
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}:{alias.name}"
    attributes = {(node.value.id, node.attr) for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id in bound}
    return bound, attributes


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_name_a_notebook_uses_is_exported(notebook):
    bound, attributes = dslab_uses(code_of(notebook))
    assert bound, "a notebook stands on dslab.lab"
    objects = {}
    for local, target in bound.items():
        module_name, name = target.split(":")
        module = importlib.import_module(module_name)
        assert name in getattr(module, "__all__", []), f"{module_name} does not export {name}"
        objects[local] = getattr(module, name)
    for local, attribute in attributes:
        owner = objects[local]
        exported = getattr(owner, "__all__", None)
        assert exported is not None and attribute in exported, \
            f"{notebook.name} uses {local}.{attribute}, which {owner.__name__} does not export"
        assert hasattr(owner, attribute)


@pytest.mark.parametrize("module_name", ["dslab.lab", "dslab.lab.lb", "dslab.lab.db",
                                         "dslab.lab.algorithms", "dslab.db.seed", "dslab.stack"])
def test_what_the_lab_exports_exists(module_name):
    module = importlib.import_module(module_name)
    assert [name for name in module.__all__ if not hasattr(module, name)] == []


def test_the_checker_sees_a_missing_name():
    tree = ast.parse("from dslab.lab import lb\nlb.no_such_function()\n")
    bound, attributes = dslab_uses(tree)
    assert bound == {"lb": "dslab.lab:lb"} and attributes == {("lb", "no_such_function")}
    assert "no_such_function" not in importlib.import_module("dslab.lab.lb").__all__
