"""What the engine (MongoDB's BSON) accepts, as limits every service checks before it stores.

A request is validated against these at the balancer, so that nothing it accepts can fail on a
shard server because of what it carries (the shard server checks them again: it is reachable
on its own). Pure, no I/O.

* integers: BSON's are signed 64-bit; a larger one raises ``OverflowError`` in PyMongo;
* strings: UTF-8, so a lone surrogate (``"\\ud800"`` is valid JSON) cannot be stored;
* field names: no ``$`` prefix, no ``.``, no NUL, not ``_id`` (the engine's own key);
* size: a document is at most 16 MiB; a request body at most ``MAX_BODY`` (413 beyond), a
  write at most ``MAX_ROWS`` rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, Field

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_BODY",
    "MAX_ROWS",
    "Int64",
    "NonNegInt64",
    "check_field_name",
    "chunks",
    "is_int64",
    "is_storable_string",
]

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
MAX_BODY = 8 << 20  # bytes of a request body; half of BSON's 16 MiB document limit
MAX_ROWS = 10_000  # rows in one write



def chunks(rows: Sequence[dict[str, Any]], max_rows: int = MAX_ROWS,
           max_bytes: int = MAX_BODY // 2) -> Iterator[list[dict[str, Any]]]:
    """``rows`` in order, in chunks of at most ``max_rows`` rows and ``max_bytes`` of JSON, so
    that each fits one request to a shard server (a shard copied whole can be far larger than
    any one write). A single row over ``max_bytes`` goes alone: it came in one request."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        n = len(orjson.dumps(row))
        if chunk and (len(chunk) == max_rows or size + n > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += n
    if chunk:
        yield chunk


Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
NonNegInt64 = Annotated[int, Field(ge=0, le=INT64_MAX)]


def is_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def is_storable_string(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _field_name(name: str) -> str:
    if not name or len(name) > 64:
        raise ValueError(f"column name {name[:20]!r} must have 1-64 characters")
    if name.startswith("$") or "." in name or "\x00" in name or name == "_id":
        raise ValueError(f"column name {name[:20]!r} cannot start with '$', contain '.' or NUL, "
                         "or be '_id'")
    if not is_storable_string(name):
        raise ValueError("column names must be valid Unicode text (no lone surrogates)")
    return name


check_field_name = AfterValidator(_field_name)
