"""Jump consistent hash, Lamping and Veach 2014: a request goes to bucket
``jump(key, n)`` of ``n`` numbered buckets; no table, O(log n) steps, perfectly balanced in
expectation. Going from n to n+1 buckets moves only the requests that land in the new bucket.

Buckets are numbers, servers are names that may leave from the middle. Here bucket k is the
k-th server of a list; a server that leaves is replaced in its bucket by the *last* server, and
the last bucket goes away. So the leaver's requests go to that last server (they stay in their
bucket) and the last bucket's requests are spread over all the others: about 2/N of the
requests move where the ring and rendezvous move 1/N. Removing the server added last is the
cheap case (1/N, exactly the leaver's). ``walk`` is the order a request takes as its owners
leave one after the other, by the same rule.
"""

from __future__ import annotations

from collections.abc import Iterator

from .base import HashRing
from .hashes import HashPair

__all__ = ["JumpRing", "jump_hash"]

_MASK64 = (1 << 64) - 1


def jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach's algorithm: the bucket in [0, buckets) of a 64-bit key."""
    key &= _MASK64
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


class JumpRing(HashRing):
    algorithm = "jump"

    def __init__(self, hashes: str | HashPair = "blake2b") -> None:
        super().__init__(hashes)
        self._buckets: list[str] = []

    def copy(self) -> JumpRing:
        clone = JumpRing(self.hashes)
        clone._names = list(self._names)
        clone._buckets = list(self._buckets)
        return clone

    def _rebuild(self) -> None:
        pass  # the bucket list is kept by add and remove: its order is the algorithm's

    def add(self, name: str) -> None:
        super().add(name)
        self._buckets = [*self._buckets, name]  # a new server takes a new last bucket

    def remove(self, name: str) -> None:
        super().remove(name)
        buckets = list(self._buckets)
        k = buckets.index(name)
        last = buckets.pop()
        if last != name:
            buckets[k] = last  # the last server moves into the leaver's bucket
        self._buckets = buckets

    def lookup(self, request_id: int) -> str:
        self._require_servers()
        buckets = self._buckets
        return buckets[jump_hash(self.hashes.request(request_id), len(buckets))]

    def walk(self, request_id: int) -> Iterator[str]:
        key = self.hashes.request(request_id)
        buckets = list(self._buckets)
        while buckets:
            k = jump_hash(key, len(buckets))
            yield buckets[k]
            last = buckets.pop()
            if k < len(buckets):
                buckets[k] = last
