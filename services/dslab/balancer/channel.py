"""What the primary and its workers say to each other, and how (``--workers`` > 1).

Each worker has one stream socket to the primary (a socketpair made when it is spawned; its
end is passed as a file descriptor). A message is a pickled dataclass behind a 4-byte length:
both ends are the same program from the same install, so pickle's trust is the process's own.

    primary -> worker   Hello (once), Membership (each change), Reply (to a Call)
    worker -> primary   Listening (once), Ack (each Membership applied), Call (/add, /rm),
                        Suspect (a proxied request failed on a replica)

Membership carries the whole state, not a change: a worker that applies version v has all of
it, a restarted worker needs nothing older, and a lost or repeated message cannot leave a
worker half-way. The ring travels as the object itself: a ring with probing places a server
where earlier collisions pushed it, so rebuilding one from its names could differ.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common.edge import EdgeLimits
from ..ring import HashRing

__all__ = ["Ack", "Call", "Hello", "Listening", "Membership", "Reply", "Suspect", "receive",
           "send"]

_LENGTH = struct.Struct("!I")


@dataclass(frozen=True)
class Hello:
    """What a worker needs to serve, sent once before its first membership."""

    index: int  # its row in the shared in-flight table
    workers: int
    host: str
    port: int
    request_timeout: float
    balance_factor: float | None
    limits: EdgeLimits
    max_body: int
    admin_token: str | None
    state_dir: Path  # the metrics files and the in-flight table


@dataclass(frozen=True)
class Membership:
    version: int
    ring: HashRing
    addresses: dict[str, tuple[str, int]]  # serving replicas, in start order
    slots: dict[str, int]  # their columns in the shared in-flight table
    evicted: list[str] = field(default_factory=list)  # the keeper's state, for /metrics
    nodes: dict[str, str] = field(default_factory=dict)  # where replicas run (Swarm)
    replacements: int = 0
    evictions: int = 0


@dataclass(frozen=True)
class Listening:
    pid: int


@dataclass(frozen=True)
class Ack:
    version: int


@dataclass(frozen=True)
class Call:
    """An admin change a worker received: ``op`` is "add" or "rm"."""

    call_id: int
    op: str
    n: int
    hostnames: list[str]


@dataclass(frozen=True)
class Reply:
    call_id: int
    names: list[str] | None  # the replicas now, when it worked
    status: int = 200  # else the ApiError's status and message
    message: str = ""


@dataclass(frozen=True)
class Suspect:
    name: str
    why: str


async def send(writer: asyncio.StreamWriter, message: Any) -> None:
    write_now(writer, message)
    await writer.drain()


def write_now(writer: asyncio.StreamWriter, message: Any) -> None:
    """Queue ``message`` without waiting: messages written in one step keep their order."""
    blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_LENGTH.pack(len(blob)) + blob)


async def receive(reader: asyncio.StreamReader) -> Any:
    """The next message; ``asyncio.IncompleteReadError`` when the other end has gone."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(length))
