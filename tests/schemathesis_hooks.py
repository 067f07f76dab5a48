"""Hooks for the schemathesis command line (``SCHEMATHESIS_HOOKS=schemathesis_hooks``), used by
``test_openapi.py``'s stateful runs."""

from __future__ import annotations

import schemathesis


@schemathesis.hook
def map_body(ctx, body):
    """Keep a valid /add or /rm to one server: each one starts or stops a process (a shard
    server also an engine), and these tests are about the answers, not about scaling."""
    if isinstance(body, dict) and isinstance(body.get("n"), int) and body["n"] > 1:
        return {**body, "n": 1}
    return body
