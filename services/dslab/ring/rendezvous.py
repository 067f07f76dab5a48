"""Rendezvous (highest-random-weight) hashing, Thaler and Ravishankar 1998: a request goes to
the server with the highest weight w(server, request). No table; a lookup costs N hashes.

Removing a server moves exactly its requests (each to its second-highest server); adding one
takes from every server only the requests it now outweighs. ``walk`` is the servers by
descending weight: the order a request would take as servers leave.
"""

from __future__ import annotations

from collections.abc import Iterator

from .base import HashRing
from .hashes import HashPair, server_number

__all__ = ["RendezvousRing"]


class RendezvousRing(HashRing):
    algorithm = "rendezvous"

    def __init__(self, hashes: str | HashPair = "blake2b") -> None:
        super().__init__(hashes)
        self._numbers: list[tuple[str, int]] = []

    def copy(self) -> RendezvousRing:
        clone = RendezvousRing(self.hashes)
        clone._names = list(self._names)
        clone._rebuild()
        return clone

    def _rebuild(self) -> None:
        self._numbers = [(name, server_number(name)) for name in self._names]

    def _weights(self, request_id: int) -> list[tuple[int, str]]:
        key = self.hashes.request(request_id)
        virtual = self.hashes.virtual
        return [(virtual(number, key), name) for name, number in self._numbers]

    def lookup(self, request_id: int) -> str:
        self._require_servers()
        return max(self._weights(request_id))[1]

    def walk(self, request_id: int) -> Iterator[str]:
        for _, name in sorted(self._weights(request_id), reverse=True):
            yield name
