"""The balancer's metadata in its own MongoDB database, so a restarted balancer finds it.

    config   {_id: "config", schema}
    ShardT   {Stud_id_low, Shard_id, Shard_size, valid_idx}
    MapT     {Shard_id, Server_id}
    ServerT  {Server_id}            (every server, also one that holds no shard)

All writes wait for the journal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.write_concern import WriteConcern

from .payloads import Schema
from .shardmap import Shard

__all__ = ["ClusterConfig", "Metadata"]


@dataclass
class ClusterConfig:
    schema: Schema
    shards: list[Shard]
    placement: dict[str, list[str]]  # server -> its shards
    valid_idx: dict[str, int] = field(default_factory=dict)


class Metadata:
    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.db = db.with_options(write_concern=WriteConcern(w=1, j=True))

    async def load(self) -> ClusterConfig | None:
        config = await self.db.config.find_one({"_id": "config"})
        if config is None:
            return None
        shards, valid_idx = [], {}
        async for doc in self.db.ShardT.find().sort("Stud_id_low", ASCENDING):
            shards.append(Shard(doc["Stud_id_low"], doc["Shard_id"], doc["Shard_size"]))
            valid_idx[doc["Shard_id"]] = doc["valid_idx"]
        placement: dict[str, list[str]] = {}
        async for doc in self.db.ServerT.find().sort("_id", ASCENDING):
            placement[doc["Server_id"]] = []
        async for doc in self.db.MapT.find().sort("_id", ASCENDING):
            placement.setdefault(doc["Server_id"], []).append(doc["Shard_id"])
        return ClusterConfig(Schema.model_validate(config["schema"]), shards, placement, valid_idx)

    async def save(self, config: ClusterConfig) -> None:
        """Replace everything (POST /init)."""
        await self.reset()
        await self.add(config.shards, config.placement)
        await self.db.config.insert_one({"_id": "config", "schema": config.schema.model_dump()})

    async def add(self, shards: list[Shard], placement: dict[str, list[str]]) -> None:
        if shards:
            await self.db.ShardT.insert_many([{**s.as_config(), "valid_idx": 0} for s in shards])
        await self._add_servers(placement)

    async def _add_servers(self, placement: dict[str, list[str]]) -> None:
        if placement:
            await self.db.ServerT.insert_many([{"Server_id": name} for name in placement])
        rows = [{"Shard_id": shard, "Server_id": name}
                for name, shard_ids in placement.items() for shard in shard_ids]
        if rows:
            await self.db.MapT.insert_many(rows)

    async def remove_servers(self, names: list[str]) -> None:
        await self.db.MapT.delete_many({"Server_id": {"$in": names}})
        await self.db.ServerT.delete_many({"Server_id": {"$in": names}})

    async def replace_server(self, old: str, new: str, shards: list[str]) -> None:
        await self._add_servers({new: shards})
        await self.remove_servers([old])

    async def set_valid_idx(self, shard_id: str, value: int) -> None:
        await self.db.ShardT.update_one({"Shard_id": shard_id}, {"$set": {"valid_idx": value}})

    async def reset(self) -> None:
        for name in ("config", "ShardT", "MapT", "ServerT"):
            await self.db[name].delete_many({})
