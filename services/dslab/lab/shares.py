"""What a Part 2 placement predicts when every server has the same capacity (pure).

Reads: a read of a shard goes to one of the shard's holders, the one its ring (salted with
the shard's id) names for a random request id (the balancer's rule), so a server's share of the reads is the sum, over the
shards it holds, of the shard's share of the reads times the server's share of that shard's
ring. Writes: every holder journals every row of its shards, so a server's work per row
written is the sum of its shards' shares of the rows. With a capacity per server, throughput
stops growing where the busiest server saturates, so it goes as 1 / (the busiest server's
share): the ratio of two configurations' busiest shares predicts the ratio of their
throughputs. The model counts work per row and per read; what it leaves out (per-commit
costs, the balancer, the clients) shows as the distance between prediction and measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..ring import get_hash_pair, make_ring, salted
from ..ring.analysis import assign, loads
from .load import random_rids

__all__ = ["busiest", "read_shares", "ring_shares", "shard_weights", "write_shares"]

RingShares = Callable[[Sequence[str], str], dict[str, float]]  # (holders, shard) -> shares


def ring_shares(holders: Sequence[str], shard: str = "", hashes: str = "blake2b",
                algorithm: str = "ring", n_ids: int = 20000) -> dict[str, float]:
    """Each holder's share of ``shard``'s ring (the Part 2 balancer's default ring, salted
    with the shard's id as the balancer salts it), over ``n_ids`` random request ids."""
    ring = make_ring(algorithm, salted(get_hash_pair(hashes), shard))
    for name in holders:
        ring.add(name)
    counts = loads(assign(ring, random_rids(n_ids, 1)), holders)
    return {name: count / n_ids for name, count in counts.items()}


def shard_weights(shards: Sequence[Mapping[str, Any]], hot: str | None = None) -> dict[str, float]:
    """Each shard's share of a workload: uniform ids over all shards (in proportion to their
    sizes), or every request to the ``hot`` shard."""
    if hot is not None:
        return {s["Shard_id"]: float(s["Shard_id"] == hot) for s in shards}
    total = sum(s["Shard_size"] for s in shards)
    return {s["Shard_id"]: s["Shard_size"] / total for s in shards}


def _holders(servers: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    held: dict[str, list[str]] = {}
    for name, shards in servers.items():
        for shard in shards:
            held.setdefault(shard, []).append(name)
    return held


def read_shares(servers: Mapping[str, Sequence[str]], weights: Mapping[str, float],
                shares_of: RingShares = ring_shares) -> dict[str, float]:
    """Each server's share of the reads, for a placement (server -> shards) and a workload."""
    out = dict.fromkeys(servers, 0.0)
    for shard, holders in _holders(servers).items():
        for name, share in shares_of(sorted(holders), shard).items():
            out[name] += weights.get(shard, 0.0) * share
    return out


def write_shares(servers: Mapping[str, Sequence[str]],
                 weights: Mapping[str, float]) -> dict[str, float]:
    """Rows each server journals per row written, for a placement and a workload."""
    return {name: sum(weights.get(shard, 0.0) for shard in shards)
            for name, shards in servers.items()}


def busiest(shares: Mapping[str, float]) -> float:
    return max(shares.values(), default=0.0)
