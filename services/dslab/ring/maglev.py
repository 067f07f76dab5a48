"""Maglev hashing, Eisenbud et al. (NSDI 2016): a lookup table of M entries (a prime, 65 537
as in the paper), filled by letting each server in turn claim the next free entry of its own
permutation (offset and skip from its hashes). Each server gets M/N entries, give or take one:
near-perfect balance and an O(1) lookup; the price is disruption on a change (the paper
measures about twice a ring's moved keys) and the table's memory and build time.

``walk`` is the owner and then the next distinct servers in table order from the request's
entry, the failover the paper leaves to the caller.
"""

from __future__ import annotations

from collections.abc import Iterator

from .base import HashRing, RingError
from .hashes import HashPair, server_number

__all__ = ["MaglevRing"]


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


class MaglevRing(HashRing):
    algorithm = "maglev"

    def __init__(self, hashes: str | HashPair = "blake2b", table_size: int = 65537) -> None:
        if not _is_prime(table_size):
            raise RingError(f"the Maglev table size must be a prime, got {table_size}")
        super().__init__(hashes)
        self.table_size = table_size
        self._table: list[str] = []

    @property
    def capacity(self) -> int:
        return self.table_size

    def describe_capacity(self) -> str:
        return f"a Maglev table of {self.table_size} entries holds at most {self.table_size} servers"

    def copy(self) -> MaglevRing:
        clone = MaglevRing(self.hashes, self.table_size)
        clone._names = list(self._names)
        clone._table = self._table
        return clone

    def _rebuild(self) -> None:
        """The paper's population: servers take turns, each claiming the next free entry of
        its permutation (offset + j * skip) mod M, until the table is full. Servers go in
        sorted order so that the table depends only on the set of servers."""
        m = self.table_size
        names = sorted(self._names)
        if not names:
            self._table = []
            return
        offsets, skips = [], []
        for name in names:
            i = server_number(name)
            offsets.append(self.hashes.virtual(i, 0) % m)
            skips.append(self.hashes.virtual(i, 1) % (m - 1) + 1)
        table: list[int] = [-1] * m
        nexts = [0] * len(names)
        filled = 0
        while True:
            for k in range(len(names)):
                c = (offsets[k] + nexts[k] * skips[k]) % m
                while table[c] >= 0:
                    nexts[k] += 1
                    c = (offsets[k] + nexts[k] * skips[k]) % m
                table[c] = k
                nexts[k] += 1
                filled += 1
                if filled == m:
                    self._table = [names[k] for k in table]
                    return

    def entries(self) -> dict[str, int]:
        """Server -> how many table entries it owns."""
        counts: dict[str, int] = {}
        for name in self._table:
            counts[name] = counts.get(name, 0) + 1
        return counts

    def lookup(self, request_id: int) -> str:
        self._require_servers()
        return self._table[self.hashes.request(request_id) % self.table_size]

    def walk(self, request_id: int) -> Iterator[str]:
        table, total = self._table, len(self._names)
        if not table:
            return
        start = self.hashes.request(request_id) % self.table_size
        seen: set[str] = set()
        for k in range(len(table)):
            name = table[(start + k) % len(table)]
            if name not in seen:
                seen.add(name)
                yield name
                if len(seen) == total:
                    return
