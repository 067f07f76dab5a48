"""The consistent hash ring: pure data, no I/O.

M slots in a circle. Server ``i`` owns K virtual nodes, the j-th placed at ``Phi(i, j) % M``;
when that slot is taken, probing (linear: +1, +2, ...; or quadratic: +1, +4, +9, ...) finds the
next free one. A request with id ``rid`` lands on slot ``H(rid) % M`` and is served by the first
virtual node at or after that slot, clockwise.

Adding or removing a server writes only that server's own slots, so only the requests that
land in the arcs it gains or loses change owner. ``walk`` yields the distinct servers in
clockwise order from a request's slot: the first is the owner, the rest are where a retry goes
when the owner fails (and, in Part 2, the order of a shard's replicas for one read).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator

from .base import (
    DuplicateServerError,
    EmptyRingError,
    HashRing,
    RingError,
    RingFullError,
    UnknownServerError,
)
from .hashes import HashPair, server_number

__all__ = ["PROBING", "ConsistentHashRing"]

PROBING = ("linear", "quadratic")


class ConsistentHashRing(HashRing):
    """The assignment's ring (the default algorithm, ``ring``)."""

    algorithm = "ring"

    def __init__(
        self,
        slots: int = 512,
        vnodes: int = 9,
        hashes: str | HashPair = "seed",
        probing: str = "linear",
        servers: Iterable[str] = (),
    ) -> None:
        if slots < 1:
            raise RingError(f"slots must be at least 1, got {slots}")
        if vnodes < 1:
            raise RingError(f"virtual servers per server (K) must be at least 1, got {vnodes}")
        if probing not in PROBING:
            raise RingError(f"probing must be one of {PROBING}, got {probing!r}")
        super().__init__(hashes)
        self.slots = slots
        self.vnodes = vnodes
        self.probing = probing
        self._owner: list[str | None] = [None] * slots
        self._servers: dict[str, list[int]] = {}  # name -> its slots, in j order
        self._occupied: list[int] = []  # sorted slots that hold a virtual node
        self._first_owner: list[str | None] = [None] * slots  # slot -> owner, precomputed
        for name in servers:
            self.add(name)

    # ---- membership -------------------------------------------------------------------------
    @property
    def servers(self) -> list[str]:
        """Server names in the order they were added."""
        return list(self._servers)

    def __len__(self) -> int:
        return len(self._servers)

    def __contains__(self, name: object) -> bool:
        return name in self._servers

    @property
    def capacity(self) -> int:
        """How many servers fit when every slot can be reached (linear probing)."""
        return self.slots // self.vnodes

    def describe_capacity(self) -> str:
        return (f"a ring of {self.slots} slots with K={self.vnodes} holds at most "
                f"{self.capacity} servers")

    def add(self, name: str) -> list[int]:  # type: ignore[override]
        """Place ``name``'s K virtual nodes; returns their slots. All or nothing."""
        if name in self._servers:
            raise DuplicateServerError(f"server {name!r} is already on the ring")
        placed = self._place(name)
        owner = list(self._owner)  # copy on write: a walk in progress keeps its snapshot
        for slot in placed:
            owner[slot] = name
        self._owner = owner
        self._servers[name] = placed
        self._reindex()
        return list(placed)

    def remove(self, name: str) -> list[int]:  # type: ignore[override]
        """Free ``name``'s slots; returns them. Nobody else's slot moves."""
        try:
            freed = self._servers.pop(name)
        except KeyError:
            raise UnknownServerError(f"server {name!r} is not on the ring") from None
        owner = list(self._owner)
        for slot in freed:
            owner[slot] = None
        self._owner = owner
        self._reindex()
        return freed

    def check_can_add(self, names: Iterable[str]) -> None:
        """Raise the error ``add`` would raise for this batch, without changing the ring."""
        trial = self.copy()
        for name in names:
            trial.add(name)

    def copy(self) -> ConsistentHashRing:
        clone = ConsistentHashRing(self.slots, self.vnodes, self.hashes, self.probing)
        clone._owner = list(self._owner)
        clone._servers = {name: list(slots) for name, slots in self._servers.items()}
        clone._occupied = list(self._occupied)
        clone._first_owner = list(self._first_owner)
        return clone

    # ---- lookup -----------------------------------------------------------------------------
    def slot_of(self, request_id: int) -> int:
        return self.hashes.request(request_id) % self.slots

    def lookup(self, request_id: int) -> str:
        owner = self._first_owner[self.hashes.request(request_id) % self.slots]
        if owner is None:
            raise EmptyRingError("the ring has no server")
        return owner

    def walk(self, request_id: int) -> Iterator[str]:
        """Distinct servers clockwise from the request's slot; the owner first."""
        return self.walk_from(self.slot_of(request_id))

    def walk_from(self, slot: int) -> Iterator[str]:
        """Distinct servers clockwise from ``slot``; its owner first."""
        # Snapshot: add/remove replace these lists, so a caller may await between steps.
        owner_of, occupied, total = self._owner, self._occupied, len(self._servers)
        if not occupied:
            return
        start = bisect_left(occupied, slot)
        seen: set[str] = set()
        for k in range(len(occupied)):
            owner = owner_of[occupied[(start + k) % len(occupied)]]
            if owner is not None and owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == total:
                    return

    def slots_of(self, name: str) -> list[int]:
        try:
            return list(self._servers[name])
        except KeyError:
            raise UnknownServerError(f"server {name!r} is not on the ring") from None

    def owners(self) -> list[str | None]:
        """Slot -> the server whose virtual node sits there (None where empty)."""
        return list(self._owner)

    def arc_owners(self) -> list[str | None]:
        """Slot -> the server a request landing there goes to."""
        return list(self._first_owner)

    # ---- internals --------------------------------------------------------------------------
    def _rebuild(self) -> None:
        self._reindex()

    def _place(self, name: str) -> list[int]:
        i = server_number(name)
        taken = {slot for slot, owner in enumerate(self._owner) if owner is not None}
        placed: list[int] = []
        for j in range(self.vnodes):
            base = self.hashes.virtual(i, j) % self.slots
            slot = self._probe(base, taken)
            if slot is None:
                free = self.slots - len(taken)
                raise RingFullError(
                    f"cannot place virtual server {j} of {name!r}: {self.probing} probing from "
                    f"slot {base} found no free slot ({free} of {self.slots} slots free; "
                    f"K={self.vnodes} fits at most {self.capacity} servers)"
                )
            taken.add(slot)
            placed.append(slot)
        return placed

    def _probe(self, base: int, taken: set[int]) -> int | None:
        for step in range(self.slots):
            offset = step if self.probing == "linear" else step * step
            slot = (base + offset) % self.slots
            if slot not in taken:
                return slot
        return None

    def _reindex(self) -> None:
        self._occupied = [slot for slot, owner in enumerate(self._owner) if owner is not None]
        first: list[str | None] = [None] * self.slots
        if self._occupied:
            # Walk backwards twice round the circle carrying the nearest owner clockwise.
            current = self._owner[self._occupied[0]]
            for slot in range(2 * self.slots - 1, -1, -1):
                owner = self._owner[slot % self.slots]
                if owner is not None:
                    current = owner
                first[slot % self.slots] = current
        self._first_owner = first
