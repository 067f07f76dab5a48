"""Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018): pure.

With ``m`` requests in flight on ``n`` replicas and a balance factor ``c > 1``, no replica may
hold ``ceil(c * (m + 1) / n)`` or more: a request whose owner is at the bound walks on (the
algorithm's ``walk``: clockwise on a ring) to the first replica under it. The owner keeps
every request it can take, so requests stay sticky while loads are even; the sum of the
bounds exceeds ``m``, so some replica is always under its bound.

``InFlight`` counts; ``bounded_walk`` is the order ``route`` tries: the replicas under the
bound in walk order first, then the others (a failover may still need them). The caller takes
a replica (``InFlight.take``) in the same step as choosing it, with no await between: the
bound holds under any concurrency on one event loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from ..ring import HashRing

__all__ = ["InFlight", "bounded_walk"]


class InFlight:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.total = 0

    def bound(self, factor: float, replicas: int) -> int:
        """No replica may reach this many in flight (counting the request being placed)."""
        return math.ceil(factor * (self.total + 1) / replicas)

    def take(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1
        self.total += 1

    def release(self, name: str) -> None:
        self.counts[name] -= 1
        self.total -= 1
        if not self.counts[name]:
            del self.counts[name]


def bounded_walk(ring: HashRing, request_id: int, inflight: InFlight,
                 factor: float) -> Iterator[str]:
    """The walk, the replicas at the bound moved to the end (in walk order)."""
    order = list(ring.walk(request_id))
    if not order:
        return
    bound = inflight.bound(factor, len(order))
    full: list[str] = []
    for name in order:
        if inflight.counts.get(name, 0) < bound:
            yield name
        else:
            full.append(name)
    yield from full
