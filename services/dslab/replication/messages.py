"""Every message of the protocol, and the output of one step of a replica (``Ready``).

Messages are frozen values with a ``src`` and a ``to``; the caller carries them (HTTP later)
and may lose, repeat or reorder them: every handler is written for that.

    manager  --Promise(T)------------>  replica     "promise T" (a prepare, a vote request)
    manager  <--PromiseReply----------  replica     granted + its LogPosition, or its higher term
    manager  --Appoint(T, members)--->  chosen one  "be primary of T"
    manager  <--AppointReply----------  replica
    primary  --Append(prev, entries, commit, round)-->  secondary   (empty: a heartbeat)
    primary  <--AppendReply(match | rejected + hint, round)--  secondary

``Ready`` is etcd's idea (``rawnode.go``'s Ready): what one step asks the caller to do, in
this order: (1) make durable ``hard_state``, ``snapshot``, ``truncate_from`` and ``append``
(journaled, j=True); (2) only then send ``messages``: a promise or an acknowledgement must
never leave before what it promises is on disk; (3) apply ``apply`` in order and answer the
confirmed reads, start the copies in ``needs_copy``, and fail the ``reads_failed``.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from .log import Entry, LogPosition

__all__ = ["Promise", "PromiseReply", "Appoint", "AppointReply", "Append", "AppendReply",
           "Message", "HardState", "Snapshot", "NeedsCopy", "ReadReady", "Ready"]


@dataclass(frozen=True)
class Promise:
    """The manager asks a replica to take ``term`` as its current term (Raft's RequestVote,
    section 5.2, with the manager as the only candidate)."""

    term: int
    src: str
    to: str


@dataclass(frozen=True)
class PromiseReply:
    """``granted``: the replica now holds ``asked`` as its term (persisted) and refuses older
    terms; ``position`` is its log then. Refused: ``term`` is the higher term it holds."""

    term: int
    src: str
    to: str
    asked: int
    granted: bool
    position: LogPosition


@dataclass(frozen=True)
class Appoint:
    """The manager makes ``to`` primary of ``term`` over ``members`` (itself included)."""

    term: int
    src: str
    to: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class AppointReply:
    term: int
    src: str
    to: str
    asked: int
    accepted: bool


@dataclass(frozen=True)
class Append:
    """Raft's AppendEntries (Figure 2): entries after (``prev_index``, ``prev_term``), the
    primary's ``commit`` index, and the read-confirmation ``round`` it is in (reads.py)."""

    term: int
    src: str
    to: str
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    round: int = 0


@dataclass(frozen=True)
class AppendReply:
    """``success``: the replica's log equals the primary's through ``match_index``. Failed:
    the check at ``rejected`` (the append's prev_index) did not pass, and ``hint`` is the
    highest index worth trying as prev_index next; or ``term`` is higher (fencing)."""

    term: int
    src: str
    to: str
    success: bool
    match_index: int = 0
    rejected: int = 0
    hint: int = 0
    round: int = 0


Message = Promise | PromiseReply | Appoint | AppointReply | Append | AppendReply


@dataclass(frozen=True)
class HardState:
    """What a replica must keep across a crash besides its log: its current term (raised only
    by a promise or a newer primary) and its commit index (as etcd's HardState keeps it, so
    commit never goes back, not even after a restart)."""

    term: int
    commit: int


@dataclass(frozen=True)
class Snapshot:
    """The log now starts after ``index`` (of ``term``): entries up to it were trimmed, or the
    data was replaced by a copy through it. ``kept_suffix``: the entries after ``index`` stay;
    False: the whole log is dropped (a copy whose last entry the log did not agree with)."""

    index: int
    term: int
    kept_suffix: bool = True


@dataclass(frozen=True)
class NeedsCopy:
    """``peer`` needs entries the primary no longer holds (before ``first_index``): copy the
    shard to it (an initial sync), then call its ``Replica.install_copy``."""

    peer: str
    term: int
    first_index: int


@dataclass(frozen=True)
class ReadReady:
    """A linearizable read may now be served by any replica whose applied index >= ``index``."""

    read_id: Hashable
    index: int


@dataclass(frozen=True)
class Ready:
    """The effects of one step, in the order the module docstring gives."""

    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    truncate_from: int | None = None
    append: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    apply: tuple[Entry, ...] = ()
    needs_copy: tuple[NeedsCopy, ...] = ()
    reads: tuple[ReadReady, ...] = ()
    reads_failed: tuple[Hashable, ...] = field(default=())

    @property
    def must_persist(self) -> bool:
        return (self.hard_state is not None or self.snapshot is not None
                or self.truncate_from is not None or bool(self.append))
