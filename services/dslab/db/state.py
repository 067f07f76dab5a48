"""What the Part 2 balancer knows about its database, in memory: pure, no I/O.

    schema, shardmap   the configuration (None / empty until /init)
    placement          server -> the shards it holds (every server of the configuration)
    rings              shard -> a ring of the live servers that hold it and are in step
    valid_idx          shard -> rows acknowledged
    in_sync            shard -> the servers that applied every acknowledged write
    in_doubt           shard -> Stud_ids of writes that were not acknowledged but may have
                       reached a replica that did not answer (memory only)

Membership changes it under the keeper's lock, the data path under the shards' locks; both
change memory only after the metadata has saved the change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..common.errors import BadRequest, NotFound, Unavailable
from ..contract.studdb import Schema
from ..ring import HashRing, get_hash_pair, make_ring, salted
from .metadata import ClusterConfig
from .placement import servers_of
from .shardmap import ShardMap

__all__ = ["ClusterState"]


@dataclass
class ClusterState:
    hashes: str = "blake2b"
    algorithm: str = "ring"
    salted_rings: bool = True
    schema: Schema | None = None
    shardmap: ShardMap = field(default_factory=ShardMap)
    placement: dict[str, list[str]] = field(default_factory=dict)
    rings: dict[str, HashRing] = field(default_factory=dict)
    valid_idx: dict[str, int] = field(default_factory=dict)
    in_sync: dict[str, set[str]] = field(default_factory=dict)
    in_doubt: dict[str, set[int]] = field(default_factory=dict)

    def adopt(self, config: ClusterConfig) -> None:
        """Take a saved configuration as it is; every ring starts empty."""
        self.schema = config.schema
        self.shardmap = ShardMap(config.shards)
        self.valid_idx = {s.shard_id: config.valid_idx.get(s.shard_id, 0) for s in config.shards}
        self.placement = {name: list(shards) for name, shards in config.placement.items()}
        self.in_sync = {s.shard_id: set(config.in_sync.get(s.shard_id, servers_of(
            config.placement, s.shard_id))) for s in config.shards}
        self.rings = {s.shard_id: self.new_ring(s.shard_id) for s in config.shards}

    def new_ring(self, shard: str) -> HashRing:
        """``shard``'s ring, salted with its id (``ring.salted``): shards held by the same
        servers spread their reads differently over them."""
        salt = shard if self.salted_rings else ""
        return make_ring(self.algorithm, salted(get_hash_pair(self.hashes), salt))

    def require_config(self) -> Schema:
        if self.schema is None:
            raise BadRequest("<Error> The database is not configured: POST /init first")
        return self.schema

    def leave_rings(self, name: str) -> None:
        for ring in self.rings.values():
            if name in ring:
                ring.remove(name)

    def live(self, shard: str) -> list[str]:
        """The servers a write of ``shard`` goes to; 503 if none is left."""
        servers = self.rings[shard].servers
        if not servers:
            raise Unavailable(f"<Error> Shard {shard} has no live replica: nothing written")
        return servers

    def shard_of(self, stud_id: int) -> str:
        shard = self.shardmap.shard_for(stud_id)
        if shard is None:
            raise NotFound(f"<Error> Stud_id {stud_id} is outside every shard")
        return shard.shard_id

    def safe_to_remove(self, names: list[str]) -> bool:
        """Would every shard keep a server if ``names`` left?"""
        left = {n: s for n, s in self.placement.items() if n not in names}
        return all(servers_of(left, shard.shard_id) for shard in self.shardmap.shards)
