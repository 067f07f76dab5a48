"""One shard's replication record (``replication.durable.Durable``) kept in the shard server's
engine, beside the shard's rows, so a restarted server resumes the replica where it stopped.

Two collections, named so they cannot clash with a shard's own (shards are "sh1", ...) or with
the store's ``_meta``:

    _repl_log_<shard>   one document per entry     {_id: index, term, command}
    _repl_state         one document per shard     {_id: shard, term, commit,
                                                     snapshot_index, snapshot_term, applied}

Every write waits for the journal (``j=True``), and the engine pays per commit, not per row
(measured with strace on SecantusDB 0.7.0b3: one ``fdatasync`` per ``update_one`` and per
``insert_many`` of 10, none for a ``delete_many`` that matched nothing, ten for a ``bulk_write``
of 10 upserts). So a ``Ready`` costs at most four writes, one of each kind below, and a group
of them (``persist_all``) no more; two more only when an insert is run again (``_insert``).

No write of a ``Ready`` is atomic with the others (the engine's multi-document transactions
committed with no ``fdatasync`` at all under j=True when measured: not durable, so not used);
the writes are ordered so that a crash between any two leaves a record a replica can safely
restart from:

1. the cut: ``delete_many`` of the entries a truncation drops (all of them, when a copy
   replaced the log). The cut is above the durable commit index, so what is left is a prefix
   of the log, with no entry the record calls committed missing;
2. the new entries: one ``insert_many``. They follow the entries kept (no gap, and no old
   entry after a new one: the old ones were cut first). Their term may be above the durable
   term for a moment: ``load`` raises the term to the last entry's (the replica had taken it);
3. the state: one ``update_one`` (term, commit, snapshot). The commit index is written after
   the entries it covers, so it never names an entry that is missing or about to be cut;
4. the trimmed prefix: ``delete_many`` of the entries up to a kept snapshot, after the state
   says where the log starts (``load`` ignores entries at or before it meanwhile).

A copy (a snapshot that drops the log) writes the state before the new entries: entries after
the copy's index must not sit after the old snapshot. A crash between its cut and its state
leaves the old state with an empty log; ``load`` then lowers commit and applied to the log's
end (the copied rows are in the engine; the primary sends the copy again).

A persist that raised may have done part of its writes: run the same ``Ready`` again (every
step can be repeated: an entry already stored is replaced, not refused) or restart from
``load``. Engine errors leave as the contract's (``engine_errors``), as the store's do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError
from pymongo.write_concern import WriteConcern

from ..common.engine_errors import engine_errors
from ..replication.durable import Durable
from ..replication.log import Entry
from ..replication.messages import HardState, Ready, Snapshot

__all__ = ["LOG_PREFIX", "STATE", "Journal"]

log = logging.getLogger(__name__)

LOG_PREFIX = "_repl_log_"
STATE = "_repl_state"
_DUPLICATE_KEY = 11000


@dataclass
class _Plan:
    """What a run of ``Ready``s does to the stored record, folded into one write of each kind."""

    hard_state: HardState | None = None
    snapshot: Snapshot | None = None  # the last one
    wipe: bool = False  # a copy dropped every stored entry
    cut: int | None = None  # stored entries from this index on are dropped
    entries: list[Entry] = field(default_factory=list)  # to insert, in index order

    def add(self, ready: Ready) -> None:
        """``Durable.persist``'s order: hard state, snapshot, truncation, new entries. Entries
        a kept snapshot trims stay in ``entries``: they are stored, then go with the prefix,
        so the log never has a gap before the state names the snapshot."""
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state
        if ready.snapshot is not None:
            self.snapshot = ready.snapshot
            if not ready.snapshot.kept_suffix:
                self.wipe, self.cut, self.entries = True, None, []
        if ready.truncate_from is not None:
            cut = ready.truncate_from
            self.entries = [e for e in self.entries if e.index < cut]
            if not self.wipe:
                self.cut = cut if self.cut is None else min(self.cut, cut)
        for entry in ready.append:
            if entry.command is not None and not isinstance(entry.command, str):
                raise TypeError(f"entry {entry.index}: a command is None or a str, "
                                f"not {type(entry.command).__name__}")
        self.entries.extend(ready.append)

    @property
    def state(self) -> dict[str, int]:
        fields: dict[str, int] = {}
        if self.hard_state is not None:
            fields |= {"term": self.hard_state.term, "commit": self.hard_state.commit}
        if self.snapshot is not None:
            fields |= {"snapshot_index": self.snapshot.index,
                       "snapshot_term": self.snapshot.term}
        return fields


class Journal:
    """One shard's replication record in the shard server's engine (journaled, j=True)."""

    def __init__(self, db: AsyncDatabase[Any], shard: str) -> None:
        self.db = db.with_options(write_concern=WriteConcern(w=1, j=True))
        self.shard = shard
        self._log: AsyncCollection[Any] = self.db[LOG_PREFIX + shard]
        self._state: AsyncCollection[Any] = self.db[STATE]
        # The applied index may lag (a restart applies again from it, and an entry sets whole
        # rows), and it follows the journaled rows it counts: no journal flush of its own.
        self._lagging_state: AsyncCollection[Any] = db.with_options(
            write_concern=WriteConcern(w=1, j=False))[STATE]

    async def load(self) -> tuple[Durable, int]:
        """The durable record and the applied index (0, and an empty Durable, when none yet).

        Mended after a crash between the writes of one persist (the module docstring says
        which): the term is at least the last entry's, and commit and applied are within the
        log. A record persisted whole is returned as it was written."""
        with engine_errors(f"Reading the journal of {self.shard}"):
            state = await self._state.find_one({"_id": self.shard}) or {}
            snapshot_index = int(state.get("snapshot_index", 0))
            docs = await self._log.find({"_id": {"$gt": snapshot_index}}).sort("_id").to_list()
        entries = [Entry(int(d["term"]), int(d["_id"]), d["command"]) for d in docs]
        snapshot_term = int(state.get("snapshot_term", 0))
        for expected, entry in enumerate(entries, start=snapshot_index + 1):
            if entry.index != expected:
                raise RuntimeError(f"the journal of {self.shard} has no entry {expected} "
                                   f"(it starts after {snapshot_index})")
        last_index = snapshot_index + len(entries)
        last_term = entries[-1].term if entries else snapshot_term
        term = max(int(state.get("term", 0)), last_term)
        commit = min(max(int(state.get("commit", 0)), snapshot_index), last_index)
        applied = min(max(int(state.get("applied", 0)), snapshot_index), commit)
        if (term, commit, applied) != (state.get("term", 0), state.get("commit", 0),
                                       state.get("applied", 0)):
            log.warning("journal of %s mended after an interrupted persist: term %s, commit "
                        "%s, applied %s (stored: %s)", self.shard, term, commit, applied, state)
        durable = Durable(term, commit, snapshot_index, snapshot_term, entries)
        return durable, applied

    async def persist(self, ready: Ready) -> None:
        """Make durable what ready asks, in its order; nothing when not ready.must_persist."""
        await self.persist_all([ready])

    async def persist_all(self, readies: Sequence[Ready]) -> None:
        """Several Readys in order, with as few engine commits as possible (group commit): at
        most one cut, one insert, one state update and one prefix delete, in the crash-safe
        order of the module docstring. The record left equals persisting them one by one.
        A snapshot in the group must name only entries the rows already hold (the replica's
        ``applied`` moves when a Ready is made, before its entries are applied)."""
        plan = _Plan()
        for ready in readies:
            if ready.must_persist:
                plan.add(ready)
        with engine_errors(f"Journaling {self.shard}"):
            if plan.wipe:
                await self._log.delete_many({})
                await self._write_state(plan.state)
            elif plan.cut is not None:
                await self._log.delete_many({"_id": {"$gte": plan.cut}})
            await self._insert(plan.entries)
            if not plan.wipe and plan.state:
                await self._write_state(plan.state)
            if plan.snapshot is not None and plan.snapshot.kept_suffix:
                await self._log.delete_many({"_id": {"$lte": plan.snapshot.index}})

    async def _write_state(self, fields: dict[str, int]) -> None:
        await self._state.update_one({"_id": self.shard}, {"$set": fields}, upsert=True)

    async def _insert(self, entries: list[Entry]) -> None:
        """One ordered ``insert_many``. An index already stored (this persist run again after
        its outcome was lost) is no error: the stored entries from the first new index on are
        dropped and the insert is made again, so the log ends with exactly these."""
        if not entries:
            return
        docs = [{"_id": e.index, "term": e.term, "command": e.command} for e in entries]
        try:
            await self._log.insert_many(docs, ordered=True)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise
            await self._log.delete_many({"_id": {"$gte": entries[0].index}})
            await self._log.insert_many(docs, ordered=True)

    async def set_applied(self, index: int) -> None:
        """The applied index (entries applied to the shard's rows): may lag, never ahead of
        commit; a restart re-applies from it (an entry sets whole rows: applying it twice is
        harmless)."""
        with engine_errors(f"Journaling {self.shard}"):
            await self._lagging_state.update_one({"_id": self.shard},
                                                 {"$set": {"applied": index}}, upsert=True)

    async def clear(self) -> None:
        """Drop the shard's record (the shard was copied afresh, or removed). The log goes
        first: a crash between leaves a state with an empty log, which ``load`` reads as a
        log that ends at its snapshot."""
        with engine_errors(f"Clearing the journal of {self.shard}"):
            await self._log.drop()
            await self._state.delete_one({"_id": self.shard})
