"""What a ring does to a set of request ids, computed from the ring itself: pure, no I/O.

Used by the lab and its tests: the server each request id goes to, the load each server
gets, and the share of ids that move when a server joins or leaves. (Bounded loads depend on
the requests in flight, so the lab measures them live: ``keeper/bounded.py``.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from .base import HashRing

__all__ = ["assign", "loads", "moved_share"]


def assign(ring: HashRing, rids: Iterable[int]) -> list[str]:
    return [ring.lookup(rid) for rid in rids]


def loads(owners: Iterable[str], servers: Iterable[str]) -> dict[str, int]:
    """Requests per server, with zero for a server that got none."""
    counted = Counter(owners)
    return {name: counted.get(name, 0) for name in servers}


def moved_share(before: Sequence[str], after: Sequence[str]) -> float:
    """The share of requests whose server changed."""
    return sum(a != b for a, b in zip(before, after, strict=True)) / len(before)
