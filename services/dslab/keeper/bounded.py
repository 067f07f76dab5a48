"""Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018): pure.

With ``m`` requests in flight on ``n`` replicas and a balance factor ``c > 1``, no replica may
hold ``ceil(c * (m + 1) / n)`` or more: a request whose owner is at the bound walks on (the
algorithm's ``walk``: clockwise on a ring) to the first replica under it. The owner keeps
every request it can take, so requests stay sticky while loads are even; the sum of the
bounds exceeds ``m``, so some replica is always under its bound.

``InFlight`` counts in one process; ``Loads`` is what ``bounded_walk`` reads, so a balancer
with several workers can count in a table they share (``balancer/sharedload.py``).
``bounded_walk`` is the order ``route`` tries: the replicas under the bound in walk order
first, then the others (a failover may still need them). The caller takes a replica
(``take``) in the same step as choosing it, with no await between: the bound holds under any
concurrency on one event loop.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator
from typing import Protocol

from ..ring import HashRing

__all__ = ["InFlight", "Loads", "bounded_walk"]


class Loads(Protocol):
    """Requests in flight per replica: counted by ``take`` and ``release``, read by the walk."""

    def bound(self, factor: float, replicas: int) -> int: ...

    def load(self, name: str) -> int: ...

    def loads(self) -> dict[str, int]: ...

    def take(self, name: str) -> Hashable:
        """Count a request on ``name``; returns what ``release`` takes back."""

    def release(self, token: Hashable) -> None: ...


class InFlight:
    """``Loads`` counted in this process."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.total = 0

    def bound(self, factor: float, replicas: int) -> int:
        """No replica may reach this many in flight (counting the request being placed)."""
        return math.ceil(factor * (self.total + 1) / replicas)

    def load(self, name: str) -> int:
        return self.counts.get(name, 0)

    def loads(self) -> dict[str, int]:
        return dict(self.counts)

    def take(self, name: str) -> str:
        self.counts[name] = self.counts.get(name, 0) + 1
        self.total += 1
        return name

    def release(self, token: Hashable) -> None:
        name = str(token)
        self.counts[name] -= 1
        self.total -= 1
        if not self.counts[name]:
            del self.counts[name]


def bounded_walk(ring: HashRing, request_id: int, inflight: Loads,
                 factor: float) -> Iterator[str]:
    """The walk, the replicas at the bound moved to the end (in walk order)."""
    order = list(ring.walk(request_id))
    if not order:
        return
    bound = inflight.bound(factor, len(order))
    full: list[str] = []
    for name in order:
        if inflight.load(name) < bound:
            yield name
        else:
            full.append(name)
    yield from full
