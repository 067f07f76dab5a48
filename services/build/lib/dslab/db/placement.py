"""Where shard replicas go: pure, seeded, testable.

``place_randomly`` spreads ``replicas`` copies of every shard over the servers: each shard's
copies land on distinct servers, and servers are filled evenly (a server gets its next shard
only when every server has as many as it), in random order.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

__all__ = ["least_replicated", "place_randomly", "servers_of"]


def place_randomly(shard_ids: Sequence[str], servers: Sequence[str], replicas: int,
                   rng: random.Random) -> dict[str, list[str]]:
    if replicas > len(servers):
        raise ValueError(f"{replicas} replicas need at least {replicas} servers, got {len(servers)}")
    placement: dict[str, list[str]] = {name: [] for name in servers}
    for shard in shard_ids:
        order = list(servers)
        rng.shuffle(order)
        order.sort(key=lambda name: len(placement[name]))  # stable: ties stay shuffled
        for name in order[:replicas]:
            placement[name].append(shard)
    return placement


def servers_of(placement: Mapping[str, Sequence[str]], shard_id: str) -> list[str]:
    return [name for name, shards in placement.items() if shard_id in shards]


def least_replicated(placement: Mapping[str, Sequence[str]], shard_ids: Sequence[str]) -> str:
    """The shard with the fewest replicas (first in ``shard_ids`` order on a tie)."""
    return min(shard_ids, key=lambda shard: len(servers_of(placement, shard)))
