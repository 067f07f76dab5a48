"""A shard's replica set, replicated through a log: the rules as a pure core, no I/O.

Like etcd's raft, every part is a state machine that takes a message (or a call from the
caller's timer or client) and returns what to persist, send and apply. Nothing here opens a
socket, sleeps, or reads a clock; the shard servers and the balancer will do that (not wired
yet). The modules, one job each:

- ``log``: entries, a replica's log, the consistency check and truncation (Raft 5.3).
- ``messages``: every message, and ``Ready``, the output of one step.
- ``durable``: what a replica keeps across a crash, built from its outputs.
- ``primary``: each secondary's progress, what to send it, the commit rule (Raft 5.3, 5.4.2).
- ``election``: the manager's elections: terms, promises, the election restriction (5.4.1).
- ``reads``: ReadIndex bookkeeping for linearizable reads served by any caught-up replica.
- ``replica``: one replica, secondary or primary, tying the above together.

docs/replication.md explains the design.
"""

from __future__ import annotations

from .durable import Durable
from .election import Chooser, Elector, ElectorOutput, most_up_to_date
from .log import NOOP, Entry, LogPosition, ReplicaLog, TruncateCommitted
from .messages import (
    Append,
    AppendReply,
    Appoint,
    AppointReply,
    HardState,
    Message,
    NeedsCopy,
    Promise,
    PromiseReply,
    ReadReady,
    Ready,
    Snapshot,
)
from .primary import Mode, Progress, commit_index, majority, trim_point
from .reads import ReadIndex, may_serve, servers
from .replica import NotPrimary, Replica, Role, TwoPrimaries

__all__ = ["Durable", "Chooser", "Elector", "ElectorOutput", "most_up_to_date", "NOOP", "Entry",
           "LogPosition", "ReplicaLog", "TruncateCommitted", "Append", "AppendReply", "Appoint",
           "AppointReply", "HardState", "Message", "NeedsCopy", "Promise", "PromiseReply",
           "ReadReady", "Ready", "Snapshot", "Mode", "Progress", "commit_index", "majority",
           "trim_point", "ReadIndex", "may_serve", "servers", "NotPrimary", "Replica", "Role",
           "TwoPrimaries"]
