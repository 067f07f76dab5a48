"""A replica's log: entries numbered from 1, each with the term of the primary that made it.

The rules kept here (Raft, Ongaro & Ousterhout 2014, section 5.3, Figure 2 "AppendEntries"):

- **Consistency check.** An append names the entry just before its own (``prev_index``,
  ``prev_term``). A replica accepts it only if its log holds an entry at ``prev_index`` with
  ``prev_term``; by induction the two logs are then equal up to there (the *log matching*
  property, section 5.3).
- **Truncation.** An accepted entry that conflicts with one already held (same index, other
  term) replaces it and everything after it. An entry already held with the same term is
  kept, and nothing after it is dropped: a duplicated or late append must never cut off
  entries a newer one brought. Entries at or below the commit index are never truncated (they
  are the same in every later primary's log: section 5.4); trying to is a bug and raises.
- **Trimming and copies.** The log keeps entries from ``first_index`` on; what is before is
  summarised by ``(snapshot_index, snapshot_term)``, the last entry the replica's data already
  contains (section 7). Only applied, hence committed, entries are ever trimmed.

The log is in memory. What the caller must make durable is named by the replica's output
(``messages.Ready``) and kept in a ``durable.Durable`` record; nothing here does any I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

__all__ = ["Entry", "LogPosition", "ReplicaLog", "Accepted", "TruncateCommitted", "NOOP"]

NOOP: Hashable = None
"""The command of the entry a new primary writes first (Raft section 5.4.2, 8)."""


@dataclass(frozen=True)
class Entry:
    """One change of the shard, at ``index`` of the log, made by the primary of ``term``."""

    term: int
    index: int
    command: Hashable = NOOP


@dataclass(frozen=True, order=True)
class LogPosition:
    """How up to date a log is: its last entry's term, then its last index (Raft 5.4.1).

    Ordered: a log is more up to date than another if its last term is higher, or the terms
    are equal and it is longer.
    """

    last_term: int
    last_index: int


@dataclass(frozen=True)
class Accepted:
    """What an accepted append changed: entries from ``truncated_from`` on were dropped (None:
    nothing), then ``appended`` were added; ``match_index`` is the last index now known equal
    to the sender's log (``prev_index + len(entries)``, not the log's end: Figure 2)."""

    truncated_from: int | None
    appended: tuple[Entry, ...]
    match_index: int


class TruncateCommitted(AssertionError):
    """An append asked to drop a committed entry: two primaries disagree on committed history."""


class ReplicaLog:
    """The entries after ``snapshot_index``, in memory, with the consistency check."""

    def __init__(self, entries: Sequence[Entry] = (), snapshot_index: int = 0,
                 snapshot_term: int = 0) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self._entries: list[Entry] = []
        for entry in entries:
            self._push(entry)

    def _push(self, entry: Entry) -> None:
        if entry.index != self.last_index + 1 or entry.term < self.last_term:
            raise ValueError(f"entry {entry} does not follow {self.position}")
        self._entries.append(entry)

    # ---- reading ----------------------------------------------------------------------------
    @property
    def first_index(self) -> int:
        """The first index the log still holds (or would hold: one past the snapshot)."""
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot_term

    @property
    def position(self) -> LogPosition:
        return LogPosition(self.last_term, self.last_index)

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; 0 for index 0; None if not known here (trimmed
        before the snapshot, or past the end)."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if self.snapshot_index < index <= self.last_index:
            return self._entries[index - self.first_index].term
        return 0 if index == 0 else None

    def entries(self, start: int, stop: int | None = None, limit: int | None = None
                ) -> tuple[Entry, ...]:
        """Entries ``start <= index < stop`` (to the end if None), at most ``limit`` of them.
        ``start`` must not be before ``first_index``."""
        if start < self.first_index:
            raise IndexError(f"entry {start} was trimmed (log starts at {self.first_index})")
        end = self.last_index + 1 if stop is None else min(stop, self.last_index + 1)
        if limit is not None:
            end = min(end, start + limit)
        return tuple(self._entries[start - self.first_index:end - self.first_index])

    def __len__(self) -> int:
        return len(self._entries)

    # ---- changing ---------------------------------------------------------------------------
    def append_new(self, term: int, command: Hashable) -> Entry:
        """The primary's own new entry, at the end."""
        entry = Entry(term, self.last_index + 1, command)
        self._push(entry)
        return entry

    def matches(self, prev_index: int, prev_term: int) -> bool:
        """The consistency check: does this log hold ``prev_term`` at ``prev_index``?"""
        return self.term_at(prev_index) == prev_term

    def accept(self, prev_index: int, prev_term: int, entries: Sequence[Entry],
               commit: int) -> Accepted | None:
        """Apply an append that passed, or fail it (None). ``commit``: this replica's commit
        index, below which nothing may be truncated. Entries at or before the snapshot are
        skipped (they are committed, so equal to the sender's)."""
        if prev_index < self.snapshot_index:
            skip = self.snapshot_index - prev_index
            if skip > len(entries):
                return Accepted(None, (), prev_index + len(entries))
            match_index = prev_index + len(entries)
            entries = entries[skip:]
            prev_index, prev_term = self.snapshot_index, self.snapshot_term
            if entries and entries[0].index != prev_index + 1:
                raise ValueError("entries are not consecutive")
        else:
            match_index = prev_index + len(entries)
        if not self.matches(prev_index, prev_term):
            return None
        truncated_from: int | None = None
        appended: list[Entry] = []
        for entry in entries:
            held = self.term_at(entry.index)
            if held == entry.term and not appended:
                continue  # already here: a duplicate or a late copy of what we have
            if held is not None and not appended:
                if entry.index <= commit:
                    raise TruncateCommitted(f"entry {entry.index} is committed here with term "
                                            f"{held}, and an append brings term {entry.term}")
                truncated_from = entry.index
                del self._entries[entry.index - self.first_index:]
            self._push(entry)
            appended.append(entry)
        return Accepted(truncated_from, tuple(appended), match_index)

    def conflict_hint(self, prev_index: int) -> int:
        """After a failed check at ``prev_index``: the highest index the sender should try next
        as its ``prev_index``. Past the end: our last index; else before the first entry of
        the term that conflicts (a whole term is skipped, as in Raft section 5.3's
        optimisation), and never before the snapshot."""
        if prev_index > self.last_index:
            return self.last_index
        term = self.term_at(prev_index)
        index = prev_index - 1
        while index > self.snapshot_index and self.term_at(index) == term:
            index -= 1
        return max(index, self.snapshot_index)

    def trim(self, upto: int) -> None:
        """Drop entries up to ``upto`` (the caller's data holds them: applied)."""
        if upto <= self.snapshot_index:
            return
        if upto > self.last_index:
            raise IndexError(f"cannot trim to {upto}: the log ends at {self.last_index}")
        term = self.term_at(upto)
        assert term is not None
        del self._entries[:upto - self.snapshot_index]
        self.snapshot_index, self.snapshot_term = upto, term

    def install(self, index: int, term: int) -> bool:
        """The data was replaced by a copy holding everything through ``index`` (of ``term``).
        Keeps the entries after it if the log agrees at ``index`` (Raft section 7), else drops
        the whole log. Returns whether the suffix was kept. A copy older than the snapshot
        changes nothing."""
        if index <= self.snapshot_index:
            return True
        if self.term_at(index) == term and index <= self.last_index:
            self.trim(index)
            return True
        self._entries.clear()
        self.snapshot_index, self.snapshot_term = index, term
        return False
