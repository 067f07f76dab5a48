"""A shard's replica set on real shard servers (processes, each with its own engine), its
elections run by the balancer's ``ShardManager`` over HTTP: majority commit, a paused
secondary, a killed primary, a restarted server catching up from its journaled log.

Each fault's effect is asserted (the primary changed, the term grew, the lag shrank back),
not only the absence of errors. Deadlines follow from the primary's heartbeat interval."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from conftest import SEED_SCHEMA, row
from dslab.db.shardmanager import ShardManager, Terms
from dslab.replication.transport import HttpTransport
from dslab.supervisor import ProcessSupervisor, ReplicaSpec

HEARTBEAT = 0.1  # the primary's heartbeat interval, given to every server below
REPL_TIMEOUT = 1.0  # a message to a peer (and the manager's to a server) may take this long
COMMIT_TIMEOUT = 10.0
# A secondary learns the commit index from the next append or heartbeat; after a pause it is
# resent what it lacks at the next heartbeat, one round trip each. Generous multiples of it:
CATCH_UP = 50 * HEARTBEAT + 2 * REPL_TIMEOUT
NAMES = ("Server1", "Server2", "Server3")


def supervisor(root) -> ProcessSupervisor:
    return ProcessSupervisor(ReplicaSpec(module="dslab.shard", env={
        "SHARD_DATA_ROOT": str(root), "REPL_HEARTBEAT_INTERVAL": str(HEARTBEAT),
        "REPL_TIMEOUT": str(REPL_TIMEOUT), "COMMIT_TIMEOUT": str(COMMIT_TIMEOUT)}))


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:g} s")
        await asyncio.sleep(HEARTBEAT / 2)


class ReplicaSet:
    """Three shard servers holding sh1, and the manager that elects among them."""

    def __init__(self, sup: Any, meta_uri: str) -> None:  # a started ProcessSupervisor
        self.sup = sup
        self.addresses: dict[str, str] = {}
        self.http = httpx.AsyncClient(timeout=30)
        self.meta: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(meta_uri)
        self.transport = HttpTransport("sh1", REPL_TIMEOUT)
        self.manager = ShardManager("balancer", "sh1", Terms(self.meta[f"m{uuid.uuid4().hex}"]),
                                    self.transport)

    async def start(self, name: str) -> None:
        replica = await self.sup.spawn(name)
        self.addresses[name] = f"{replica.host}:{replica.port}"
        answer = await self.http.post(self.url(name, "/config"),
                                      json={"schema": SEED_SCHEMA, "shards": ["sh1"]})
        assert answer.status_code == 200, answer.text

    def url(self, name: str, path: str) -> str:
        return f"http://{self.addresses[name]}{path}"

    async def state(self, name: str) -> dict[str, Any]:
        answer = await self.http.get(self.url(name, "/repl/state"), timeout=REPL_TIMEOUT)
        [state] = [s for s in answer.json()["replicas"] if s["shard"] == "sh1"]
        return state

    async def propose(self, name: str, change: dict[str, Any]) -> httpx.Response:
        return await self.http.post(self.url(name, "/repl/propose"),
                                    json={"shard": "sh1", "change": change})

    async def rows(self, name: str) -> list[dict[str, Any]]:
        answer = await self.http.request("GET", self.url(name, "/copy"),
                                         json={"shards": ["sh1"]})
        return list(answer.json()["sh1"])

    async def close(self) -> None:
        self.transport.close()
        await self.http.aclose()
        await self.meta.close()


def run(scenario: Callable[[ReplicaSet], Awaitable[None]], tmp_path, engine_uri) -> None:
    async def main() -> None:
        async with supervisor(tmp_path) as sup:
            rs = ReplicaSet(sup, engine_uri)
            try:
                for name in NAMES:
                    await rs.start(name)
                await scenario(rs)
            finally:
                await rs.close()
    asyncio.run(main())


async def insert(rs: ReplicaSet, primary: str, ids: range) -> None:
    answers = await asyncio.gather(*(rs.propose(primary, {"insert": [row(i)]}) for i in ids))
    assert [a.status_code for a in answers] == [200] * len(ids), [a.text for a in answers]
    assert [a.json()["result"] for a in answers] == [[]] * len(ids)  # none held before


def test_a_write_commits_on_a_majority_and_a_paused_secondary_costs_nothing(tmp_path,
                                                                              engine_uri):
    async def scenario(rs: ReplicaSet) -> None:
        primary = await rs.manager.elect(rs.addresses)
        assert rs.manager.term == 1
        assert (await rs.state(primary))["role"] == "primary"
        await insert(rs, primary, range(0, 20))
        for name in NAMES:  # every replica applies what was committed
            await eventually(functools.partial(_holds, rs, name, range(0, 20)), CATCH_UP,
                             f"{name} applying the first 20 rows")

        # A secondary paused: the primary and the other secondary are a majority.
        paused = next(n for n in NAMES if n != primary)
        os.kill(rs.sup.pid(paused), signal.SIGSTOP)
        try:
            started = time.monotonic()
            await insert(rs, primary, range(20, 60))
            took = time.monotonic() - started
            state = await rs.state(primary)
            assert state["match"][paused] < state["last_index"], state  # it fell behind
            assert took < COMMIT_TIMEOUT  # no write waited for it (a 503 would say so)
        finally:
            os.kill(rs.sup.pid(paused), signal.SIGCONT)
        # Back, it is resent what it lacks: the lag shrinks back to nothing.
        await eventually(lambda: _holds(rs, paused, range(0, 60)), CATCH_UP,
                         f"{paused} catching up")
        assert (await rs.state(paused))["applied"] == (await rs.state(primary))["commit"]

        # A change at a secondary is refused with the contract's shape, and nothing changes.
        refused = await rs.propose(paused, {"insert": [row(99)]})
        assert refused.status_code == 409 and "not the primary" in refused.json()["message"]
        assert 99 not in {r["Stud_id"] for r in await rs.rows(primary)}

    run(scenario, tmp_path, engine_uri)


def test_a_killed_primary_is_replaced_and_nothing_acknowledged_is_lost(tmp_path, engine_uri):
    async def scenario(rs: ReplicaSet) -> None:
        first = await rs.manager.elect(rs.addresses)
        await insert(rs, first, range(0, 30))
        updated = await rs.propose(first, {"update": {"Stud_id": 3, "row": row(3, marks=77)}})
        assert updated.status_code == 200 and updated.json()["result"] is True
        journaled = (await rs.state(first))["last_index"]
        assert journaled == 32  # the no-op, 30 inserts, the update
        os.kill(rs.sup.pid(first), signal.SIGKILL)  # its engine dies with it

        second = await rs.manager.elect(rs.addresses)  # two of three answer: a majority
        assert second != first and rs.manager.term == 2
        # Its no-op commits every entry before it: all 31 acknowledged changes are applied.
        expected = {i: row(i, marks=77) if i == 3 else row(i) for i in range(0, 30)}

        async def all_there() -> bool:
            return {r["Stud_id"]: r for r in await rs.rows(second)} == expected
        await eventually(all_there, CATCH_UP, f"{second} applying what {first} acknowledged")
        await insert(rs, second, range(30, 40))

        # The killed server restarts on its own journal (a new port): appointed again among
        # the three, the primary resends it only what its log lacks.
        await rs.sup.remove(first)
        await rs.start(first)
        back = await rs.state(first)
        assert back["last_index"] >= journaled and back["role"] == "secondary", back
        third = await rs.manager.elect(rs.addresses)
        assert rs.manager.term == 3
        await eventually(lambda: _holds(rs, first, range(0, 40)), CATCH_UP,
                         f"{first} catching up from its log")
        assert {r["Stud_id"]: r for r in await rs.rows(first)}[3] == row(3, marks=77)
        assert (await rs.state(first))["term"] == 3
        assert third in NAMES

    run(scenario, tmp_path, engine_uri)


def test_a_bad_message_is_refused_with_a_400_and_changes_nothing(tmp_path, engine_uri):
    async def scenario(rs: ReplicaSet) -> None:
        name = NAMES[0]
        before = await rs.state(name)
        for body in ({"shard": "sh1", "message": {"kind": "Nope"}},
                     {"shard": "sh1", "message": {"kind": "Append", "term": "x"}},
                     {"shard": "sh1", "message": {"kind": "Append", "term": 1, "src": "b",
                                                  "to": name, "prev_index": 0, "prev_term": 0,
                                                  "entries": [{"term": 1, "index": 5}],
                                                  "commit": 0}},
                     {"shard": "sh9", "message": {"kind": "Promise", "term": 1, "src": "b",
                                                  "to": name}},
                     {"shard": "sh1", "message": {"kind": "Promise", "term": 1, "src": "b",
                                                  "to": "Server9"}}):
            answer = await rs.http.post(rs.url(name, "/repl/step"), json=body)
            assert answer.status_code == 400, (body, answer.text)
            assert answer.json()["status"] == "failure", answer.text
        assert await rs.state(name) == before
        for change in ({"insert": [{"Stud_id": 1}]}, {"drop": 1}, {"delete": "x"}, {}):
            assert (await rs.propose(name, change)).status_code == 400, change

    run(scenario, tmp_path, engine_uri)


async def _holds(rs: ReplicaSet, name: str, ids: range) -> bool:
    try:
        return {r["Stud_id"] for r in await rs.rows(name)} >= set(ids)
    except httpx.HTTPError:
        return False


pytestmark = pytest.mark.timeout(120)


def test_an_insert_is_all_or_nothing_on_every_replica(tmp_path, engine_uri):
    async def scenario(rs: ReplicaSet) -> None:
        primary = await rs.manager.elect(rs.addresses)
        await insert(rs, primary, range(0, 3))
        clash = await rs.propose(primary, {"insert": [row(2), row(7), row(1)]})
        assert clash.status_code == 200 and clash.json()["result"] == [1, 2]  # held: none stored
        await insert(rs, primary, range(3, 5))  # committed after the clash: applied after it
        for name in NAMES:
            await eventually(functools.partial(_holds, rs, name, range(0, 5)), CATCH_UP,
                             f"{name} applying")
            assert sorted(r["Stud_id"] for r in await rs.rows(name)) == list(range(0, 5))

    run(scenario, tmp_path, engine_uri)
