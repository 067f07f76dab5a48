"""ReadIndex bookkeeping (Raft dissertation section 6.4; the paper's section 8).

A linearizable read must see every write acknowledged before it began, without writing to
the log. The primary

1. takes the read's index R: its commit index when the read began, once it has committed an
   entry of its own term (before that, its commit index may lag what earlier primaries
   committed: the read waits for the no-op, and R is the commit index at that moment);
2. confirms it is still the primary: a *round* of appends, tagged with a round number, that a
   majority answers in the primary's term (a deposed primary never gets that majority,
   because a majority promised a newer term); or, through ``confirm_by_lease``, a lease the
   caller derives from heartbeats and a bound on clock drift (the hook: this module keeps no
   clock, and trusting a lease is the caller's risk);
3. releases the read with R: **any** replica whose applied index is at least R may serve it
   (``may_serve``, ``servers``), so reads spread over the replica set, as CRAQ spreads them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

__all__ = ["PendingRead", "ReadIndex", "may_serve", "servers"]


@dataclass
class PendingRead:
    read_id: Hashable
    round: int
    index: int | None  # None until the primary has committed an entry of its term


class ReadIndex:
    """The primary's reads waiting for their leadership round (volatile: lost on step-down)."""

    def __init__(self) -> None:
        self.round = 0
        self.pending: list[PendingRead] = []
        self.leased_round = 0

    def begin(self, read_id: Hashable, commit: int, commit_is_current: bool) -> int:
        """Start a read; returns the new round the primary must send to every peer."""
        self.round += 1
        self.pending.append(PendingRead(read_id, self.round,
                                        commit if commit_is_current else None))
        return self.round

    def confirm_by_lease(self) -> None:
        """The caller's lease says no other primary can exist now: every read begun so far is
        confirmed as if its round had a majority."""
        self.leased_round = self.round

    def settle(self, commit: int, commit_is_current: bool,
               acked: Callable[[int], int], majority: int) -> list[tuple[Hashable, int]]:
        """The reads that may now be released, as (read_id, index). ``acked(r)``: how many
        members (the primary included) answered round ``r`` or a later one in this term."""
        done: list[tuple[Hashable, int]] = []
        keep: list[PendingRead] = []
        for read in self.pending:
            if read.index is None and commit_is_current:
                read.index = commit
            confirmed = read.round <= self.leased_round or acked(read.round) >= majority
            if confirmed and read.index is not None:
                done.append((read.read_id, read.index))
            else:
                keep.append(read)
        self.pending = keep
        return done

    def drop(self) -> list[Hashable]:
        """The primary stepped down: these reads cannot be confirmed (answer them an error)."""
        ids = [read.read_id for read in self.pending]
        self.pending = []
        return ids


def may_serve(applied: int, index: int) -> bool:
    """A replica may serve a read released with ``index`` once it has applied through it."""
    return applied >= index


def servers(applied: Mapping[str, int], index: int) -> tuple[str, ...]:
    """The replicas (by name, sorted) that may serve a read released with ``index``."""
    return tuple(sorted(name for name, upto in applied.items() if may_serve(upto, index)))
