"""What a primary has queued for one peer, merged before it goes: pure, no I/O.

A primary sends each peer one request at a time, so that appends arrive in the order they
were made (two in flight on two connections could arrive swapped, be refused by the
consistency check and cost a probe). While one is in flight, the next ones queue; when it
returns, the queue goes as few messages as it can: an append that continues the one before
it (its ``prev_index`` is where the other's entries end, in the same term) is merged into
it, carrying the later commit index and read round. An empty append (a heartbeat) after
another append of its term adds nothing but those two numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .messages import Append, Message

__all__ = ["coalesce"]


def coalesce(queued: Sequence[Message]) -> list[Message]:
    out: list[Message] = []
    for message in queued:
        last = out[-1] if out else None
        if (isinstance(message, Append) and isinstance(last, Append)
                and message.term == last.term and message.to == last.to
                and message.prev_index == _end(last)):
            out[-1] = replace(last, entries=last.entries + message.entries,
                              commit=max(last.commit, message.commit),
                              round=max(last.round, message.round))
        else:
            out.append(message)
    return out


def _end(append: Append) -> int:
    return append.entries[-1].index if append.entries else append.prev_index
