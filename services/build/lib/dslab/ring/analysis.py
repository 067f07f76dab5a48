"""What a ring does to a set of request ids, computed from the ring itself: pure, no I/O.

Used by experiment A-4 and its tests: the load each server gets, how many ids move when a
server joins or leaves, and "consistent hashing with bounded loads" (Mirrokni, Thorup and
Zadimoghaddam, 2016; what HAProxy's ``hash-balance-factor`` and Vimeo's proxy do): every
server takes at most ``ceil(c * m / n)`` of ``m`` requests, and a request whose owner is full
walks clockwise to the next server with room.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from .ring import ConsistentHashRing

__all__ = ["assign", "assign_bounded", "loads", "moved_share"]


def assign(ring: ConsistentHashRing, rids: Iterable[int]) -> list[str]:
    return [ring.lookup(rid) for rid in rids]


def assign_bounded(ring: ConsistentHashRing, rids: Sequence[int], c: float) -> list[str]:
    """Owners under bounded loads, requests taken in order. ``c`` >= 1 (1 is perfectly even)."""
    if c < 1:
        raise ValueError(f"the balance factor c must be at least 1, got {c}")
    capacity = math.ceil(c * len(rids) / len(ring))
    load: Counter[str] = Counter()
    owners = []
    for rid in rids:
        for name in ring.walk(rid):
            if load[name] < capacity:
                load[name] += 1
                owners.append(name)
                break
    return owners


def loads(owners: Iterable[str], servers: Iterable[str]) -> dict[str, int]:
    """Requests per server, with zero for a server that got none."""
    counted = Counter(owners)
    return {name: counted.get(name, 0) for name in servers}


def moved_share(before: Sequence[str], after: Sequence[str]) -> float:
    """The share of requests whose server changed."""
    return sum(a != b for a, b in zip(before, after, strict=True)) / len(before)
