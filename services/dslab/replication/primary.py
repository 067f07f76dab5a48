"""The primary's bookkeeping: each secondary's progress, what to send it, and the commit rule.

- **Progress** (Raft Figure 2's nextIndex and matchIndex, with etcd's ``tracker/progress.go``
  modes). ``match``: the highest index known to equal the primary's log on that peer.
  ``next``: the next index to send. A peer is *probed* (one append at a time, stepping
  ``next`` back on each refusal, by the peer's hint) until an append succeeds; then it is
  *replicated* (entries are sent as they come, ``next`` moved on optimistically). A refusal
  that answers an append already superseded is stale and ignored, so repeated or reordered
  replies cannot move ``next`` backwards past what is known. A peer whose ``next`` is before
  the log's ``first_index`` is in *copy* mode: nothing is sent until the copy is installed.
- **Commit rule** (Raft 5.3, 5.4.2, Figure 8): the commit index is the highest N held by a
  majority of the members (the primary counts itself, through its last index) **whose entry
  is of the primary's current term**. An older-term entry held by a majority is committed
  only when a current-term entry after it is: counting replicas for it is not enough.
- **Trimming**: the log may drop entries every live replica holds and that the primary has
  applied; a size bound may drop more, and then a lagging replica is copied instead.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

__all__ = ["majority", "Mode", "Progress", "commit_index", "trim_point"]


def majority(members: int) -> int:
    """How many members make a majority: more than half."""
    return members // 2 + 1


class Mode(Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    COPY = "copy"


@dataclass
class Progress:
    """What the primary knows of one secondary (volatile: rebuilt by each new primary)."""

    next: int
    match: int = 0
    mode: Mode = Mode.PROBE
    paused: bool = False  # a probe is out: wait for its answer or the next heartbeat
    acked_round: int = 0  # the highest read round this peer answered in the primary's term

    def succeeded(self, match_index: int) -> bool:
        """An append succeeded through ``match_index``; whether that told anything new."""
        self.paused = False
        if match_index <= self.match and self.mode is not Mode.PROBE:
            return False
        updated = match_index > self.match
        self.match = max(self.match, match_index)
        self.next = max(self.next, self.match + 1)
        self.mode = Mode.REPLICATE
        return updated

    def refused(self, rejected: int, hint: int) -> bool:
        """The append after ``rejected`` failed its check; ``hint``: the peer's suggestion.
        Returns whether ``next`` moved (the caller sends again)."""
        if self.mode is Mode.COPY:
            return False
        if self.mode is Mode.REPLICATE:
            if rejected <= self.match:
                return False  # answers an append older than what we know matches
        elif rejected != self.next - 1:
            return False  # answers an earlier probe
        self.next = max(self.match + 1, min(rejected, hint + 1))
        self.mode, self.paused = Mode.PROBE, False
        return True


def commit_index(last_index: int, matches: Iterable[int], members: int, current: int,
                 term_at: Callable[[int], int | None], term: int) -> int:
    """The primary's commit index after an acknowledgement: the highest N > ``current`` that a
    majority of ``members`` holds (the primary through ``last_index``, the others through
    their ``matches``) and whose entry is of ``term``; else ``current``."""
    held = sorted([last_index, *matches], reverse=True)
    need = majority(members)
    if len(held) < need:
        return current
    candidate = held[need - 1]  # the need-th highest: held by at least `need` members
    # Entries are in term order, so below the first current-term entry none qualifies.
    if candidate > current and term_at(candidate) == term:
        return candidate
    return current


def trim_point(matches: Mapping[str, int], live: Collection[str], applied: int,
               last_index: int, max_entries: int) -> int:
    """Up to where the primary may trim its log: what every ``live`` peer holds and the
    primary applied; if that leaves more than ``max_entries``, further (never past
    ``applied``): the peers left behind will be copied."""
    upto = min([applied, *(matches[p] for p in live if p in matches)])
    if last_index - upto > max_entries:
        upto = min(applied, last_index - max_entries)
    return max(upto, 0)
