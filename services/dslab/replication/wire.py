"""The protocol's messages as JSON, for the shard servers' ``/repl/*`` endpoints: pure, no I/O.

A message travels as ``{"kind": <class name>, ...its fields}``; an entry as
``{"term", "index", "command"}``, a command being ``null`` (the no-op) or a string (the shard
server's encoded change). Anything else is refused with ``WireError`` (a ``ValueError``), which
the endpoint turns into a 400: a bad message changes nothing.

The requests that carry them:

* ``POST /repl/step`` ``{"shard", "message", "peers"?}``: a message for this server's replica
  of ``shard``; the answer holds the replies addressed to the sender (a promise's, an
  appointment's, an append's), sent only once what they promise is journaled. ``peers`` (name
  to ``host:port``) comes with an ``Appoint``: whom the new primary replicates to.
* ``POST /repl/propose`` ``{"shard", "change"}``: a change of the shard's rows, at the primary
  (``shard/changes.py`` says which); answered once its entry is committed (journaled by a
  majority): a read there waits until its rows hold it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .log import Entry
from .messages import Append, AppendReply, Appoint, AppointReply, Message, Promise, PromiseReply

__all__ = ["WireError", "encode", "decode", "StepRequest", "ProposeRequest", "KINDS"]

KINDS: dict[str, type[Any]] = {cls.__name__: cls for cls in
                               (Promise, PromiseReply, Appoint, AppointReply, Append, AppendReply)}
_ADAPTERS = {name: TypeAdapter(cls) for name, cls in KINDS.items()}


class WireError(ValueError):
    """Not a message of the protocol."""


def encode(message: Message) -> dict[str, Any]:
    kind = type(message).__name__
    return {"kind": kind, **_ADAPTERS[kind].dump_python(message, mode="json")}


def decode(doc: Any) -> Message:
    if not isinstance(doc, dict) or doc.get("kind") not in KINDS:
        raise WireError(f"not a message: kind must be one of {', '.join(KINDS)}")
    fields = {k: v for k, v in doc.items() if k != "kind"}
    try:
        message: Message = _ADAPTERS[doc["kind"]].validate_python(fields)
    except ValidationError as exc:
        raise WireError(f"bad {doc['kind']}: {exc.errors()[0]['msg']} at "
                        f"{'.'.join(map(str, exc.errors()[0]['loc']))}") from None
    _check(message)
    return message


def _check(message: Message) -> None:
    if message.term < 0:
        raise WireError("a term is never negative")
    if isinstance(message, Append):
        if message.prev_index < 0 or message.commit < 0:
            raise WireError("indexes are never negative")
        for offset, entry in enumerate(message.entries, start=1):
            _check_entry(entry, message.prev_index + offset)


def _check_entry(entry: Entry, index: int) -> None:
    if entry.index != index:
        raise WireError(f"entries must follow prev_index one by one: {entry.index} where "
                        f"{index} was due")
    if entry.command is not None and not isinstance(entry.command, str):
        raise WireError("a command is null (the no-op) or a string")


class StepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shard: str
    message: dict[str, Any]
    peers: dict[str, str] = Field(default_factory=dict)


class ProposeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shard: str
    change: dict[str, Any]
