"""A shard server's rows in MongoDB: one collection per shard, a unique index on Stud_id.

Every write waits for the journal (``j=True``): acknowledged means on disk. Measured here, 20
inserts with the default write concern followed by a SIGKILL of the engine left 0 or 11 rows;
with ``j=True`` all 20 survived every time. A write replaces a row of the same Stud_id, so a
retried write cannot duplicate a row. The schema and the list of shards are kept in the database too,
so a restarted server finds its configuration with its data. Every engine call runs inside
``engine_errors``: PyMongo's failures leave this module as the contract's 400, 409 or 503.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DeleteOne, ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError
from pymongo.write_concern import WriteConcern

from ..common.engine_errors import engine_errors
from ..contract.studdb import Schema

__all__ = ["ShardStore"]

_META = "_meta"
_NO_ID = {"_id": 0}
_DUPLICATE_KEY = 11000


class ShardStore:
    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.db = db.with_options(write_concern=WriteConcern(w=1, j=True))
        self.schema: Schema | None = None
        self.shards: list[str] = []

    async def load(self) -> None:
        """Pick up the configuration a previous run of this server left."""
        with engine_errors("Reading the configuration"):
            doc = await self.db[_META].find_one({"_id": "config"})
        if doc is not None:
            self.schema = Schema.model_validate(doc["schema"])
            self.shards = list(doc["shards"])

    async def configure(self, schema: Schema, shards: list[str]) -> None:
        shards = sorted({*self.shards, *shards})
        with engine_errors("Configuring"):
            for shard in shards:
                await self.db[shard].create_index([("Stud_id", ASCENDING)], unique=True)
            await self.db[_META].replace_one(
                {"_id": "config"}, {"_id": "config", "schema": schema.model_dump(),
                                    "shards": shards}, upsert=True)
        self.schema = schema
        self.shards = shards

    async def rows(self, shard: str, low: int | None = None, high: int | None = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {}
        if low is not None and high is not None:
            query = {"Stud_id": {"$gte": low, "$lte": high}}
        with engine_errors(f"Reading {shard}"):
            cursor = self.db[shard].find(query, _NO_ID).sort("Stud_id", ASCENDING)
            return await cursor.to_list()

    async def write(self, shard: str, rows: list[dict[str, Any]]) -> None:
        """Store ``rows``, replacing any row of the same Stud_id (a retried write, a refill).

        New rows go in as one ``insert_many``: the engine commits it once, where it commits
        each upsert of a bulk on its own (measured here: 10 rows, 10 commits). Only the rows
        the unique index refuses are then replaced."""
        with engine_errors(f"Writing {shard}"):
            held = await self._insert(shard, rows)
            if held:
                await self.db[shard].bulk_write(
                    [ReplaceOne({"Stud_id": row["Stud_id"]}, row, upsert=True) for row in held],
                    ordered=False)

    async def insert_new(self, shard: str, rows: list[dict[str, Any]]) -> list[int]:
        """Store the rows whose Stud_id is not here yet, in one ``insert_many``; returns the
        Stud_ids that were here already (those rows are left as they were). The unique index
        answers "is it new?", so the balancer needs no round trip to ask first."""
        with engine_errors(f"Writing {shard}"):
            held = await self._insert(shard, rows)
        return sorted(row["Stud_id"] for row in held)

    async def _insert(self, shard: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One unordered ``insert_many``; returns the rows the unique index refused. Any other
        failure is raised. The caller translates the engine's errors."""
        if not rows:
            return []
        try:  # copies: insert_many gives each document an _id
            await self.db[shard].insert_many([dict(row) for row in rows], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise
            return [rows[e["index"]] for e in errors]
        return []

    async def update(self, shard: str, stud_id: int, row: dict[str, Any]) -> bool:
        with engine_errors(f"Updating {shard}"):
            result = await self.db[shard].replace_one({"Stud_id": stud_id}, row)
        return result.matched_count == 1

    async def delete(self, shard: str, stud_id: int) -> bool:
        with engine_errors(f"Deleting from {shard}"):
            result = await self.db[shard].delete_one({"Stud_id": stud_id})
        return result.deleted_count == 1

    async def delete_many(self, shard: str, stud_ids: list[int]) -> None:
        if stud_ids:
            with engine_errors(f"Erasing from {shard}"):
                await self.db[shard].bulk_write([DeleteOne({"Stud_id": i}) for i in stud_ids],
                                                ordered=False)

    async def existing(self, shard: str, stud_ids: list[int]) -> list[int]:
        with engine_errors(f"Reading {shard}"):
            cursor = self.db[shard].find({"Stud_id": {"$in": stud_ids}}, {"_id": 0, "Stud_id": 1})
            return sorted(doc["Stud_id"] for doc in await cursor.to_list())
