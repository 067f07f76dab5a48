"""The balancer's metadata in its own MongoDB database, so a restarted balancer finds it.

    config   {_id: "config", schema}
    ShardT   {Stud_id_low, Shard_id, Shard_size, valid_idx, in_sync}
    MapT     {Shard_id, Server_id}
    ServerT  {Server_id}            (every server, also one that holds no shard)

``in_sync`` lists the servers that hold every acknowledged write of the shard (as Kafka keeps
its in-sync replicas): only they may be the source when a shard whose servers all died is
started again. All writes wait for the journal; the engine's failures leave this module as the
contract's errors (``engine_errors``), so a balancer answers 503, never 500, when it is down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.write_concern import WriteConcern

from ..common.engine_errors import engine_errors
from ..contract.studdb import Schema
from .shardmap import Shard

__all__ = ["ClusterConfig", "Metadata"]


@dataclass
class ClusterConfig:
    schema: Schema
    shards: list[Shard]
    placement: dict[str, list[str]]  # server -> its shards
    valid_idx: dict[str, int] = field(default_factory=dict)
    in_sync: dict[str, list[str]] = field(default_factory=dict)  # shard -> its in-sync servers

_SAVING = "Saving the metadata"


class Metadata:
    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.db = db.with_options(write_concern=WriteConcern(w=1, j=True))

    async def load(self) -> ClusterConfig | None:
        with engine_errors("Loading the metadata"):
            config = await self.db.config.find_one({"_id": "config"})
            if config is None:
                return None
            shards, valid_idx, in_sync = [], {}, {}
            async for doc in self.db.ShardT.find().sort("Stud_id_low", ASCENDING):
                shards.append(Shard(doc["Stud_id_low"], doc["Shard_id"], doc["Shard_size"]))
                valid_idx[doc["Shard_id"]] = doc["valid_idx"]
                if "in_sync" in doc:  # metadata from before in_sync: every holder is in sync
                    in_sync[doc["Shard_id"]] = list(doc["in_sync"])
            placement: dict[str, list[str]] = {}
            async for doc in self.db.ServerT.find().sort("_id", ASCENDING):
                placement[doc["Server_id"]] = []
            async for doc in self.db.MapT.find().sort("_id", ASCENDING):
                placement.setdefault(doc["Server_id"], []).append(doc["Shard_id"])
        for shard in shards:
            in_sync.setdefault(shard.shard_id, [n for n, held in placement.items()
                                                if shard.shard_id in held])
        return ClusterConfig(Schema.model_validate(config["schema"]), shards, placement,
                             valid_idx, in_sync)

    async def save(self, config: ClusterConfig) -> None:
        """Replace everything (POST /init)."""
        await self.reset()
        await self.add(config.shards, config.placement)
        with engine_errors(_SAVING):
            await self.db.config.insert_one({"_id": "config",
                                             "schema": config.schema.model_dump()})

    async def add(self, shards: list[Shard], placement: dict[str, list[str]]) -> None:
        """New shards (in sync: the servers placed on them) and new servers (also in sync on
        the existing shards they were refilled with)."""
        new = {s.shard_id for s in shards}
        with engine_errors(_SAVING):
            if shards:
                await self.db.ShardT.insert_many([
                    {**s.as_config(), "valid_idx": 0,
                     "in_sync": [n for n, held in placement.items() if s.shard_id in held]}
                    for s in shards])
            await self._add_servers(placement, skip=new)

    async def _add_servers(self, placement: dict[str, list[str]], skip: set[str]) -> None:
        if placement:
            await self.db.ServerT.insert_many([{"Server_id": name} for name in placement])
        rows = [{"Shard_id": shard, "Server_id": name}
                for name, shard_ids in placement.items() for shard in shard_ids]
        if rows:
            await self.db.MapT.insert_many(rows)
        for name, shard_ids in placement.items():
            joined = [s for s in shard_ids if s not in skip]
            if joined:
                await self.db.ShardT.update_many({"Shard_id": {"$in": joined}},
                                                 {"$addToSet": {"in_sync": name}})

    async def remove_servers(self, names: list[str]) -> None:
        with engine_errors(_SAVING):
            await self.db.ShardT.update_many({}, {"$pull": {"in_sync": {"$in": names}}})
            await self.db.MapT.delete_many({"Server_id": {"$in": names}})
            await self.db.ServerT.delete_many({"Server_id": {"$in": names}})

    async def replace_server(self, old: str, new: str, shards: list[str]) -> None:
        with engine_errors(_SAVING):
            await self._add_servers({new: shards}, skip=set())
        await self.remove_servers([old])

    async def set_shard_state(self, shard_id: str, *, valid_idx: int | None = None,
                              in_sync: list[str] | None = None) -> None:
        await self.set_shard_states({shard_id: (valid_idx, in_sync)})

    async def set_shard_states(self, states: dict[str, tuple[int | None, list[str] | None]]) -> None:
        """What a write changed, for each shard it touched: its row count and who applied it
        (each None when unchanged). One journaled batch: either it is saved or the write is
        undone by the caller."""
        updates = []
        for shard_id, (valid_idx, in_sync) in states.items():
            changes: dict[str, object] = {}
            if valid_idx is not None:
                changes["valid_idx"] = valid_idx
            if in_sync is not None:
                changes["in_sync"] = sorted(in_sync)
            if changes:
                updates.append(UpdateOne({"Shard_id": shard_id}, {"$set": changes}))
        if updates:
            with engine_errors(_SAVING):
                await self.db.ShardT.bulk_write(updates, ordered=True)

    async def reset(self) -> None:
        with engine_errors(_SAVING):
            for name in ("config", "ShardT", "MapT", "ServerT"):
                await self.db[name].delete_many({})
