"""The HTTP contract as OpenAPI 3 documents, one per service, served at ``GET /openapi.json``.

``balancer.yaml`` is the Part 1 load balancer, ``db.yaml`` the Part 2 balancer. They are the
contract of ``shared/API.md`` in a form tools read: schemathesis tests the live stacks against
them (``tests/test_openapi.py``).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import yaml

__all__ = ["document", "document_json"]


@functools.cache
def document(name: str) -> dict[str, Any]:
    """The document ``name`` ("balancer" or "db") as a dict."""
    text = resources.files(__package__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


@functools.cache
def document_json(name: str) -> bytes:
    return json.dumps(document(name)).encode()
