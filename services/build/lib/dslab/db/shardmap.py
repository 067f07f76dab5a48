"""Shard routing as pure logic: Stud_id -> shard, Stud_id range -> shards, rows -> per-shard groups.

A shard holds ``Stud_id_low <= Stud_id < Stud_id_low + Shard_size``. Shards may leave gaps
between them but never overlap; ``ShardMap`` refuses overlapping shards when it is built.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Shard", "ShardMap", "ShardOverlap"]


class ShardOverlap(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Shard:
    low: int  # Stud_id_low
    shard_id: str
    size: int  # Shard_size

    @property
    def high(self) -> int:
        """The first Stud_id past the shard."""
        return self.low + self.size

    def holds(self, stud_id: int) -> bool:
        return self.low <= stud_id < self.high

    def as_config(self) -> dict[str, Any]:
        return {"Stud_id_low": self.low, "Shard_id": self.shard_id, "Shard_size": self.size}


class ShardMap:
    def __init__(self, shards: Iterable[Shard] = ()) -> None:
        self._shards = sorted(shards)
        self._lows = [s.low for s in self._shards]
        self._by_id = {s.shard_id: s for s in self._shards}
        if len(self._by_id) != len(self._shards):
            raise ShardOverlap("two shards have the same Shard_id")
        for a, b in zip(self._shards, self._shards[1:]):
            if b.low < a.high:
                raise ShardOverlap(f"shards {a.shard_id} [{a.low}, {a.high}) and "
                                   f"{b.shard_id} [{b.low}, {b.high}) overlap")

    def with_shards(self, more: Iterable[Shard]) -> ShardMap:
        return ShardMap([*self._shards, *more])

    @property
    def shards(self) -> list[Shard]:
        return list(self._shards)

    def __contains__(self, shard_id: object) -> bool:
        return shard_id in self._by_id

    def __getitem__(self, shard_id: str) -> Shard:
        return self._by_id[shard_id]

    def __len__(self) -> int:
        return len(self._shards)

    def shard_for(self, stud_id: int) -> Shard | None:
        k = bisect_right(self._lows, stud_id) - 1
        if k >= 0 and self._shards[k].holds(stud_id):
            return self._shards[k]
        return None

    def shards_for_range(self, low: int, high: int) -> list[Shard]:
        """Shards that hold any Stud_id in ``[low, high]`` (both ends included), in order."""
        if high < low:
            return []
        first = max(bisect_right(self._lows, low) - 1, 0)
        return [s for s in self._shards[first:] if s.low <= high and s.high > low]

    def group(self, rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list[Mapping[str, Any]]], list[int]]:
        """Rows by shard id (in input order), and the Stud_ids no shard holds."""
        groups: dict[str, list[Mapping[str, Any]]] = {}
        homeless: list[int] = []
        for row in rows:
            shard = self.shard_for(row["Stud_id"])
            if shard is None:
                homeless.append(row["Stud_id"])
            else:
                groups.setdefault(shard.shard_id, []).append(row)
        return groups, homeless
