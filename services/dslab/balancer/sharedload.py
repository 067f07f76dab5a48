"""Requests in flight per replica, counted by every worker of one balancer in a shared table.

Bounded loads (``keeper/bounded.py``) need the loads of the whole balancer: a bound that each
worker applied to its own share would let W workers put W times the bound on one replica. So
the workers count in one file mapped by all of them: a row per worker, a column per replica
slot, and column 0 the row's total. A worker writes only its own row (no lock: one writer per
cell) and reads every row; what it reads may be a request old, as any load balancer's view of
loads is. The primary numbers the replicas' slots (``Membership.slots``) and never gives a
slot back while it may still be counted, and zeroes a dead worker's row before its successor
starts.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import cast

__all__ = ["SLOTS", "SharedInFlight", "create_table", "zero_row"]

SLOTS = 4096  # replica slots, numbered 1..SLOTS-1 round-robin: a reused slot is long drained
_CELL = 8  # one signed 64-bit count


def create_table(path: Path, workers: int) -> None:
    """A zeroed table for ``workers`` rows."""
    with open(path, "wb") as f:
        f.truncate(workers * SLOTS * _CELL)


def zero_row(path: Path, row: int) -> None:
    """Forget what a dead worker counted (its requests died with it)."""
    with open(path, "r+b") as f:
        f.seek(row * SLOTS * _CELL)
        f.write(bytes(SLOTS * _CELL))


class SharedInFlight:
    """``Loads`` of the whole balancer, counted by worker ``row`` of ``workers``."""

    def __init__(self, path: Path, workers: int, row: int) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, workers * SLOTS * _CELL)
        finally:
            os.close(fd)
        self._cells = memoryview(self._map).cast("q")
        self._rows = range(0, workers * SLOTS, SLOTS)
        self._mine = row * SLOTS
        self.slots: Mapping[str, int] = {}  # replica -> its column, from the membership

    def bound(self, factor: float, replicas: int) -> int:
        total = sum(self._cells[r] for r in self._rows)
        return math.ceil(factor * (total + 1) / replicas)

    def load(self, name: str) -> int:
        slot = self.slots.get(name)
        if slot is None:
            return 0
        return sum(self._cells[r + slot] for r in self._rows)

    def loads(self) -> dict[str, int]:
        found = {name: self.load(name) for name in self.slots}
        return {name: count for name, count in found.items() if count}

    def take(self, name: str) -> int:
        slot = self.slots[name]
        cells, mine = self._cells, self._mine
        cells[mine] += 1
        cells[mine + slot] += 1
        return slot

    def release(self, token: Hashable) -> None:
        cells, mine = self._cells, self._mine
        cells[mine] -= 1
        cells[mine + cast(int, token)] -= 1

    def close(self) -> None:
        self._cells.release()
        self._map.close()
