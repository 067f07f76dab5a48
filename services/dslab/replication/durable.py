"""What a replica has made durable: the record its ``Ready`` outputs build, and from which it
restarts.

A crash loses everything else (the role, the peers' progress, pending reads). The data the
entries were applied to (the shard's rows in its engine) is durable too, but it is the
caller's: a restarted replica is told its applied index, which never exceeds the durable
commit index, because entries are applied only after the commit index was made durable.

This is a plain in-memory record; the shard server will keep the same fields in its engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .log import Entry, ReplicaLog
from .messages import Ready

__all__ = ["Durable"]


@dataclass
class Durable:
    term: int = 0
    commit: int = 0
    snapshot_index: int = 0
    snapshot_term: int = 0
    entries: list[Entry] = field(default_factory=list)

    def persist(self, ready: Ready) -> None:
        """Make durable what ``ready`` asks, in its order: hard state, snapshot, truncation,
        new entries."""
        if ready.hard_state is not None:
            self.term, self.commit = ready.hard_state.term, ready.hard_state.commit
        if ready.snapshot is not None:
            snap = ready.snapshot
            if snap.kept_suffix:
                self.entries = [e for e in self.entries if e.index > snap.index]
            else:
                self.entries = []
            self.snapshot_index, self.snapshot_term = snap.index, snap.term
        if ready.truncate_from is not None:
            cut = ready.truncate_from
            self.entries = [e for e in self.entries if e.index < cut]
        self.entries.extend(ready.append)

    def log(self) -> ReplicaLog:
        """The log a restarted replica starts from."""
        return ReplicaLog(self.entries, self.snapshot_index, self.snapshot_term)
