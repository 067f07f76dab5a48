"""A primary answers a change once it is committed, before its rows hold it, and still
decides every later change as if they did: a change of a Stud_id waits for the entries
before it that touch that Stud_id, and a read waits for every entry committed before it.

A real ``ReplicaHost`` with its ``Journal`` and ``ShardStore`` on a real engine, alone in its
replica set (a majority of one), so an entry commits once it is journaled. Its applier is the
real ``apply_commands`` behind a gate the test opens: the one place where the order of two
events (an answer, an apply) has to be stepped by hand."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pymongo
import pytest

from conftest import SEED_SCHEMA, row
from dslab.contract.studdb import Schema
from dslab.replication import Appoint, Promise
from dslab.shard.changes import ShardChanges, apply_commands, parse_change
from dslab.shard.journal import Journal
from dslab.shard.replicas import ReplicaHost
from dslab.shard.rowcache import RowCache
from dslab.shard.store import ShardStore

NAME = "Server1"
TIMEOUT = 30.0  # a change waits this long for a majority; here it is never reached


class GatedApplier:
    """``apply_commands`` that waits for the test to open the gate; counts what it applied."""

    def __init__(self, store: ShardStore) -> None:
        self.store = store
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()  # an apply is held at the gate

    async def __call__(self, commands: list[str]) -> None:
        if not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        await apply_commands(self.store, "sh1", commands)


async def settled(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` finished once every callback ready now has run (no clock involved:
    the loop is run until nothing but I/O or the gate is left to wait on)."""
    for _ in range(50):
        await asyncio.sleep(0)
    return task.done()


def run(scenario: Callable[[ShardChanges, ReplicaHost, ShardStore, GatedApplier],
                           Awaitable[None]], engine_uri: str) -> None:
    async def main() -> None:
        client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(engine_uri)
        db = client[f"c{uuid.uuid4().hex}"]
        store = ShardStore(db, RowCache())
        await store.configure(Schema.model_validate(SEED_SCHEMA), ["sh1"])
        applier = GatedApplier(store)

        async def no_peers(address: str, message: Any) -> list[Any]:
            raise AssertionError(f"a replica set of one sent {message} to {address}")

        host = ReplicaHost(NAME, "sh1", Journal(db, "sh1"), applier, no_peers)
        changes = ShardChanges(store, "sh1", host, TIMEOUT)
        try:
            await host.receive(Promise(1, "balancer", NAME))
            await host.receive(Appoint(1, "balancer", NAME, (NAME,)))
            assert await host.decidable(TIMEOUT) == 1  # its no-op is applied
            await scenario(changes, host, store, applier)
        finally:
            applier.gate.set()
            await host.close()
            await client.close()
    asyncio.run(main())


def change(body: dict[str, Any]) -> Any:
    return parse_change(Schema.model_validate(SEED_SCHEMA), body)


def test_a_change_is_answered_once_committed_before_its_rows_hold_it(engine_uri):
    async def scenario(changes, host, store, applier) -> None:
        assert await changes.make(change({"insert": [row(1)]})) == []  # the gate is open
        applier.gate.clear()
        answered = await changes.make(change({"insert": [row(2)]}))
        assert answered == []
        state = await host.state()
        assert state.commit == state.last_index > host.applied  # committed, not applied
        assert await store.held("sh1", [2]) == []  # the answer came before the rows had it
        applier.gate.set()
        await host.until_applied(state.commit, TIMEOUT)
        assert await store.held("sh1", [2]) == [2]

    run(scenario, engine_uri)


@pytest.mark.parametrize("then, expected", [
    ({"insert": [row(5), row(6)]}, [5]),  # held: refused whole, nothing logged
    ({"update": {"Stud_id": 5, "row": row(5, marks=9)}}, True),  # the row is there to update
    ({"delete": 5}, True),
])
def test_a_later_change_of_the_same_row_is_decided_once_the_rows_hold_the_first(
        engine_uri, then, expected):
    async def scenario(changes, host, store, applier) -> None:
        applier.gate.clear()
        assert await changes.make(change({"insert": [row(5)]})) == []  # committed, held back
        later = asyncio.ensure_future(changes.make(change(then)))
        assert not await settled(later)  # it waits for the rows, not deciding on stale ones
        applier.gate.set()
        assert await asyncio.wait_for(later, TIMEOUT) == expected

    run(scenario, engine_uri)


def test_a_change_of_other_rows_does_not_wait_for_the_apply(engine_uri):
    async def scenario(changes, host, store, applier) -> None:
        applier.gate.clear()
        assert await changes.make(change({"insert": [row(5)]})) == []
        other = asyncio.ensure_future(changes.make(change({"insert": [row(6)]})))
        assert await asyncio.wait_for(other, TIMEOUT) == []  # answered with the gate closed
        await applier.waiting.wait()
        assert host.applied < (await host.state()).commit

    run(scenario, engine_uri)


def test_a_read_waits_for_every_change_committed_before_it(engine_uri):
    async def scenario(changes, host, store, applier) -> None:
        applier.gate.clear()
        assert await changes.make(change({"insert": [row(7)]})) == []
        read = asyncio.ensure_future(host.readable(TIMEOUT))
        assert not await settled(read)
        applier.gate.set()
        await asyncio.wait_for(read, TIMEOUT)
        assert await store.held("sh1", [7]) == [7]

    run(scenario, engine_uri)
