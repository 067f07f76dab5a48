"""The one interface every consistent-hashing algorithm offers to the balancers: pure, no I/O.

    add / remove        change the set of servers (all or nothing; errors are ``RingError``)
    lookup(rid)         the server a request id goes to
    walk(rid)           every server once, the owner first, then where a retry goes
    check_can_add       the error ``add`` would raise for a batch, nothing changed

Request ids are non-negative integers (``hashes.request_number``); servers are names, hashed
through ``hashes.server_number`` and the algorithm's ``HashPair``, so a hash function and an
algorithm are chosen independently. Lookups never take a lock: a change replaces the tables a
lookup reads rather than mutating them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator

from .hashes import HashPair, get_hash_pair

__all__ = [
    "DuplicateServerError",
    "EmptyRingError",
    "HashRing",
    "RingError",
    "RingFullError",
    "UnknownServerError",
]


class RingError(ValueError):
    """Base class of the rings' errors: all are mistakes of the caller, never I/O."""


class RingFullError(RingError):
    """A server cannot be placed (no room left in the structure)."""


class DuplicateServerError(RingError):
    pass


class UnknownServerError(RingError):
    pass


class EmptyRingError(RingError):
    pass


class HashRing(abc.ABC):
    """What the balancers use; each algorithm keeps its own tables behind it."""

    algorithm: str = ""

    def __init__(self, hashes: str | HashPair = "blake2b") -> None:
        self.hashes = get_hash_pair(hashes) if isinstance(hashes, str) else hashes
        self._names: list[str] = []  # in the order they were added

    # ---- membership -------------------------------------------------------------------------
    @property
    def servers(self) -> list[str]:
        """Server names in the order they were added."""
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    @property
    def capacity(self) -> int:
        """How many servers the structure can hold."""
        return 1 << 31

    def describe_capacity(self) -> str:
        return f"{type(self).__name__} holds at most {self.capacity} servers"

    def add(self, name: str) -> None:
        if name in self._names:
            raise DuplicateServerError(f"server {name!r} is already on the ring")
        if len(self._names) >= self.capacity:
            raise RingFullError(f"cannot add {name!r}: {self.describe_capacity()}")
        self._names = [*self._names, name]
        self._rebuild()

    def remove(self, name: str) -> None:
        if name not in self._names:
            raise UnknownServerError(f"server {name!r} is not on the ring")
        self._names = [n for n in self._names if n != name]
        self._rebuild()

    def check_can_add(self, names: Iterable[str]) -> None:
        trial = self.copy()
        for name in names:
            trial.add(name)

    @abc.abstractmethod
    def copy(self) -> HashRing: ...

    # ---- lookup -----------------------------------------------------------------------------
    @abc.abstractmethod
    def lookup(self, request_id: int) -> str: ...

    @abc.abstractmethod
    def walk(self, request_id: int) -> Iterator[str]: ...

    def _require_servers(self) -> None:
        if not self._names:
            raise EmptyRingError("the ring has no server")

    @abc.abstractmethod
    def _rebuild(self) -> None:
        """Recompute the lookup tables after a change of ``_names`` (replace, never mutate)."""
