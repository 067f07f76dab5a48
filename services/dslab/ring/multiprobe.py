"""Multi-probe consistent hashing, Appleton and O'Reilly 2015: each server is one point on a
64-bit circle; a request is hashed ``probes`` times (21 in the paper) and goes to the server
whose point follows one of its probes most closely. One point per server (memory O(N)) and a
peak-to-mean load of about 1.05 with 21 probes, where a ring needs hundreds of virtual nodes
for that; a lookup costs ``probes`` hashes and binary searches.

Removing a server moves exactly its requests. ``walk`` is the owner, then the server that wins
once the owner has left, and so on.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from .base import HashRing, RingError
from .hashes import HashPair, server_number

__all__ = ["MultiProbeRing"]

_CIRCLE = 1 << 64


class MultiProbeRing(HashRing):
    algorithm = "multiprobe"

    def __init__(self, hashes: str | HashPair = "blake2b", probes: int = 21) -> None:
        if probes < 1:
            raise RingError(f"probes must be at least 1, got {probes}")
        super().__init__(hashes)
        self.probes = probes
        self._points: list[int] = []
        self._owners: list[str] = []

    def copy(self) -> MultiProbeRing:
        clone = MultiProbeRing(self.hashes, self.probes)
        clone._names = list(self._names)
        clone._points, clone._owners = self._points, self._owners
        return clone

    def _point(self, name: str) -> int:
        return self.hashes.virtual(server_number(name), 0) % _CIRCLE

    def _rebuild(self) -> None:
        pairs = sorted((self._point(name), name) for name in self._names)
        self._points = [p for p, _ in pairs]
        self._owners = [n for _, n in pairs]

    def _probe_points(self, request_id: int) -> list[int]:
        key = self.hashes.request(request_id)
        return [self.hashes.virtual(key, p + 2) % _CIRCLE for p in range(self.probes)]

    def _distances(self, request_id: int) -> dict[str, int]:
        """Server -> its smallest clockwise distance from any probe of the request."""
        points, owners = self._points, self._owners
        best: dict[str, int] = {}
        for probe in self._probe_points(request_id):
            k = bisect_left(points, probe)
            if k == len(points):
                k = 0
            distance = (points[k] - probe) % _CIRCLE
            name = owners[k]
            if distance < best.get(name, _CIRCLE):
                best[name] = distance
        return best

    def lookup(self, request_id: int) -> str:
        self._require_servers()
        best = self._distances(request_id)
        return min(best, key=lambda name: (best[name], name))

    def walk(self, request_id: int) -> Iterator[str]:
        """The owner, then the owner if it left, and so on: the probes are searched again
        among the servers that remain."""
        points, owners = list(self._points), list(self._owners)
        probes = self._probe_points(request_id)
        while owners:
            best: tuple[int, str] | None = None
            for probe in probes:
                k = bisect_left(points, probe) % len(points)
                candidate = ((points[k] - probe) % _CIRCLE, owners[k])
                if best is None or candidate < best:
                    best = candidate
            assert best is not None
            yield best[1]
            k = owners.index(best[1])
            del points[k], owners[k]
