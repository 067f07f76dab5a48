"""The shard store's row cache on a real engine: reads from memory equal the engine's rows,
and a change whose outcome the store never learned is read as the engine holds it."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pymongo

from conftest import SEED_SCHEMA, row
from dslab.contract.studdb import Schema
from dslab.engine import LocalEngine
from dslab.shard.rowcache import RowCache
from dslab.shard.store import ShardStore


async def engine_rows(direct: ShardStore, shard: str, low: int | None = None,
                      high: int | None = None) -> list[dict[str, Any]]:
    assert not direct.cache.holds(shard)
    return await direct.rows(shard, low, high)


async def loaded(store: ShardStore, shards: list[str]) -> None:
    """Wait for the store's background loads (they are the engine's pace: a deadline of 10 s
    for a few rows), then check they left every shard in memory."""
    await asyncio.wait_for(asyncio.gather(*store._warming), 10)
    assert all(store.cache.holds(shard) for shard in shards)


def run_on_an_engine(tmp_path, scenario) -> None:
    async def main() -> None:
        engine = LocalEngine(tmp_path / "engine")
        client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(
            await engine.start(), retryWrites=False)
        try:
            store = ShardStore(client["studdb"], RowCache())
            await store.configure(Schema.model_validate(SEED_SCHEMA), ["sh1", "sh2"])
            uncached = ShardStore(client["studdb"])  # the same database, read straight
            await scenario(engine, store, uncached)
        finally:
            await client.close()
            engine.stop()
    asyncio.run(main())


def test_reads_from_memory_equal_the_engines_after_every_kind_of_change(tmp_path):
    async def scenario(engine, store, uncached):
        await store.write("sh1", [row(5), row(1), row(9)])
        await loaded(store, ["sh1", "sh2"])  # configured: both loaded, then kept up to date
        assert await store.rows("sh1", 1, 5) == [row(1), row(5)]
        await store.write("sh1", [row(5, marks=77), row(3)])  # one replaced, one new
        assert await store.insert_new("sh1", [row(3, marks=11), row(4)]) == [3]
        assert await store.update("sh1", 9, row(9, marks=12))
        assert not await store.update("sh1", 8, row(8))
        assert await store.delete("sh1", 1) and not await store.delete("sh1", 1)
        await store.delete_many("sh1", [4, 6])
        for low, high in ((None, None), (0, 4), (5, 5), (6, 100), (10, 20)):
            assert await store.rows("sh1", low, high) == await engine_rows(uncached, "sh1", low, high)
        assert await store.rows("sh1") == [row(3), row(5, marks=77), row(9, marks=12)]
        assert store.cache.holds("sh1")

    run_on_an_engine(tmp_path, scenario)


def test_a_write_cancelled_in_flight_is_read_as_the_engine_applied_it(tmp_path):
    """The engine is frozen while a write is in flight and the write is cancelled: the store
    never learns the outcome. Thawed, the engine applies it: the store must read it (the cache
    forgot the shard), not the rows it held before."""
    async def scenario(engine, store, uncached):
        await store.write("sh1", [row(1)])
        await loaded(store, ["sh1"])
        assert await store.rows("sh1") == [row(1)]
        os.killpg(engine.proc.pid, signal.SIGSTOP)
        try:
            write = asyncio.ensure_future(store.write("sh1", [row(2)]))
            await asyncio.sleep(0.5)  # the request is in the frozen engine's socket by now
            write.cancel()
            await asyncio.gather(write, return_exceptions=True)
            assert write.cancelled()
        finally:
            os.killpg(engine.proc.pid, signal.SIGCONT)
        assert not store.cache.holds("sh1")
        deadline = asyncio.get_running_loop().time() + 10  # the engine's own pace, thawed
        while await engine_rows(uncached, "sh1") != [row(1), row(2)]:
            assert asyncio.get_running_loop().time() < deadline, "the engine never applied it"
            await asyncio.sleep(0.05)
        assert await store.rows("sh1") == [row(1), row(2)]

    run_on_an_engine(tmp_path, scenario)


def test_a_restarted_store_loads_what_it_holds_before_any_read(tmp_path):
    async def scenario(engine, store, uncached):
        await store.write("sh1", [row(1), row(2)])
        await store.write("sh2", [row(4100)])
        restarted = ShardStore(store.db, RowCache())  # as a server started again on its data
        await restarted.load()
        assert restarted.shards == ["sh1", "sh2"]
        await loaded(restarted, ["sh1", "sh2"])
        assert await restarted.rows("sh1") == [row(1), row(2)]
        assert await restarted.rows("sh2") == await engine_rows(uncached, "sh2") == [row(4100)]

    run_on_an_engine(tmp_path, scenario)
