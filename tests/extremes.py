"""Hypothesis strategies for valid-shaped requests with extreme values, shared by the fuzz tests.

Random JSON mostly fails at the first type check; these reach the engine's limits: integers at
and beyond +-2^63, NaN and Infinity (Python's JSON reads those tokens), lone surrogates (valid
JSON text, not storable UTF-8), NUL, ``$`` and ``.`` where names go, long and non-ASCII strings,
objects where scalars belong.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

INT64_MAX = (1 << 63) - 1
EDGE_INTS = [0, -1, 1, INT64_MAX, INT64_MAX + 1, -INT64_MAX - 1, -INT64_MAX - 2, 1 << 64,
             10 ** 30, -(10 ** 30), 10 ** 4000]
EDGE_STRINGS = ["", "\x00", "\ud800", "a\udfffb", "$where", "a.b", "_id", "é" * 3000,
                "名前" * 500, "x" * 70_000, "Server1", "sh1"]

ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers())
floats = st.one_of(st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -0.0,
                                    5e-324]), st.floats())
strings = st.one_of(st.sampled_from(EDGE_STRINGS), st.text(max_size=20))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, strings)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(strings, inner, max_size=3)), max_leaves=8)


def as_json(body: object) -> bytes:
    """The body as Python's JSON writes it: NaN and Infinity as those tokens, lone surrogates
    escaped (httpx's ``json=`` refuses NaN, so the fuzz tests send these bytes)."""
    return json.dumps(body).encode()
