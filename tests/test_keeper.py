"""The replica keeper's orders, stepped by hand: replacements that fail half way, a refill whose
source dies, an eviction during a refill, /rm racing a replacement.

Both balancers' real tenants run here (Part 1's ``ReplicaSet``, Part 2's ``ShardCluster`` with
its metadata on a real engine). Two boundaries are stand-ins, so that the test chooses what
happens when: ``SteppedSupervisor`` (replicas that start, die and keep data when the test says)
and ``SteppedShardServers`` (the shard servers' HTTP answers, from rows held in memory). The
real processes, containers and shard servers run in test_supervisor_and_upstream,
test_db_failures, test_db_recovery and test_docker; heartbeat rounds are run by the test.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pymongo
import pytest

from dslab.balancer.membership import ReplicaSet
from dslab.common.errors import BadRequest, Unavailable
from dslab.contract.studdb import InitRequest, RmRequest
from dslab.db.cluster import ShardCluster
from dslab.db.fanout import ServerRefused
from dslab.db.metadata import Metadata
from dslab.db.seed import row, seed_init
from dslab.engine import LocalEngine
from dslab.keeper.upstream import UpstreamConnectError
from dslab.ring import ConsistentHashRing
from dslab.supervisor import Replica, ReplicaSpec, ReplicaSupervisor, SpawnError, UnknownReplica

Step = Callable[[str], Awaitable[None]]


class SteppedSupervisor(ReplicaSupervisor):
    """A stand-in backend: replicas are names; the test kills them, fails their start, or
    holds a start at a gate. Data outlives a replica until ``discard_data``, as a volume does."""

    def __init__(self) -> None:
        super().__init__(ReplicaSpec(module="none"))
        self.running: dict[str, Replica] = {}
        self.killed: set[str] = set()
        self.spawned: list[str] = []
        self.discarded: list[str] = []
        self.data: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
        self.fail_spawns = 0  # the next n spawns fail
        self.before_spawn: Step | None = None
        self._ports = itertools.count(1)  # never dialled: the stand-in servers answer calls

    async def spawn(self, name: str) -> Replica:
        self.spawned.append(name)
        if self.before_spawn is not None:
            await self.before_spawn(name)
        if self.fail_spawns:
            self.fail_spawns -= 1
            raise SpawnError(f"{name} could not start")
        self.killed.discard(name)
        self.running[name] = Replica(name, "127.0.0.1", next(self._ports))
        self.data.setdefault(name, {})
        return self.running[name]

    async def remove(self, name: str) -> None:
        if self.running.pop(name, None) is None:
            raise UnknownReplica(name)
        self.killed.discard(name)

    def replicas(self) -> list[Replica]:
        return list(self.running.values())

    def alive(self, name: str) -> bool:
        return name in self.running and name not in self.killed

    async def discard_data(self, name: str) -> None:
        self.discarded.append(name)
        self.data.pop(name, None)

    def kill(self, name: str) -> None:
        self.killed.add(name)


class SteppedShardServers:
    """The shard servers' answers, from ``supervisor.data``: what the real ones answer to the
    calls the balancer makes. ``before`` runs ahead of each call, for the test to step."""

    def __init__(self, supervisor: SteppedSupervisor) -> None:
        self.supervisor = supervisor
        self.before: Callable[[str, str, dict[str, Any]], Awaitable[None]] | None = None
        self.refuse: set[tuple[str, str]] = set()  # (server, path) answered with a 500

    async def call(self, name: str, method: str, path: str,
                   payload: dict[str, Any]) -> dict[str, Any]:
        if self.before is not None:
            await self.before(name, path, payload)
        if not self.supervisor.alive(name):
            raise UpstreamConnectError(f"{name} refused the connection")
        if (name, path) in self.refuse:
            raise ServerRefused(name, 500, "<Error> stepped failure")
        held = self.supervisor.data[name]
        if path == "/config":
            for shard in payload["shards"]:
                held.setdefault(shard, {})
            return {"message": "configured", "status": "success"}
        if path == "/copy":
            return {s: [held[s][k] for k in sorted(held[s])] for s in payload["shards"]}
        rows = held[payload["shard"]]
        if path == "/write":
            rows.update({r["Stud_id"]: r for r in payload["data"]})
            return {"message": "Data entries added", "current_idx": len(rows)}
        if path == "/erase":
            for stud_id in payload["Stud_ids"]:
                rows.pop(stud_id, None)
            return {"message": "erased"}
        if path == "/exists":
            return {"Stud_ids": [i for i in payload["Stud_ids"] if i in rows]}
        if path == "/read":
            low, high = payload["Stud_id"]["low"], payload["Stud_id"]["high"]
            return {"data": [rows[k] for k in sorted(rows) if low <= k <= high]}
        raise AssertionError(f"unexpected call {method} {path}")


class Clock:
    """The keeper's clock, moved by the test past a backoff."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(coro):
    return asyncio.run(coro)


# ---- Part 1: the replica set on the keeper ----------------------------------------------------

def replica_set() -> tuple[ReplicaSet, SteppedSupervisor, Clock]:
    sup = SteppedSupervisor()
    rs = ReplicaSet(sup, ConsistentHashRing(hashes="blake2b"), rng=random.Random(7))
    clock = Clock()
    rs.keeper.clock = clock
    return rs, sup, clock


def test_a_dead_replica_leaves_the_ring_at_once_and_is_replaced_under_a_fresh_name():
    async def scenario():
        rs, sup, _ = replica_set()
        await rs.start(["S1", "S2", "S3"], heartbeats=False)
        sup.kill("S2")
        await rs.keeper.heartbeat_round([("S2", "gone")])
        names = rs.names()
        assert "S2" not in names and len(names) == 3 and names[:2] == ["S1", "S3"]
        assert sorted(rs.ring.servers) == sorted(names) == sorted(sup.running)
        assert sup.discarded == ["S2"] and rs.keeper.evicted() == []
        await rs.close()
        assert sup.running == {}

    run(scenario())


def test_a_replacement_that_cannot_start_is_retried_after_a_backoff_and_then_succeeds():
    async def scenario():
        rs, sup, clock = replica_set()
        await rs.start(["S1", "S2"], heartbeats=False)
        sup.kill("S2")
        sup.fail_spawns = 1
        await rs.keeper.heartbeat_round([("S2", "gone")])
        assert rs.names() == ["S1"] and rs.ring.servers == ["S1"] and list(sup.running) == ["S1"]
        assert rs.target == 2 and rs.keeper.evicted() == ["S2"]
        assert sup.discarded == []  # S2's data stays until a newcomer has taken over
        tries = len(sup.spawned)
        await rs.keeper.heartbeat_round([])  # within the backoff: not tried again
        assert len(sup.spawned) == tries
        clock.now += rs.keeper.backoff
        await rs.keeper.heartbeat_round([])
        assert len(sup.spawned) == tries + 1 and len(rs.names()) == 2 and rs.keeper.evicted() == []
        assert "S2" in sup.discarded
        await rs.close()

    run(scenario())


def test_the_backoff_doubles_up_to_its_cap():
    async def scenario():
        rs, sup, clock = replica_set()
        await rs.start(["S1", "S2"], heartbeats=False)
        sup.kill("S2")
        sup.fail_spawns = 100
        waits = []
        await rs.keeper.heartbeat_round([("S2", "gone")])
        for _ in range(6):
            tries, start = len(sup.spawned), clock.now
            while len(sup.spawned) == tries:
                clock.now += rs.keeper.backoff / 4
                await rs.keeper.heartbeat_round([])
            waits.append(round((clock.now - start) / rs.keeper.backoff, 2))
        assert waits == [1, 2, 4, 8, 8, 8]  # in heartbeat intervals; the cap is 8
        await rs.close()

    run(scenario())


def test_rm_racing_a_replacement_waits_for_it_and_leaves_no_replica_behind():
    async def scenario():
        rs, sup, _ = replica_set()
        await rs.start(["S1", "S2", "S3"], heartbeats=False)
        entered, release = asyncio.Event(), asyncio.Event()

        async def gate(name: str) -> None:
            entered.set()
            await release.wait()

        sup.before_spawn = gate
        sup.kill("S3")
        replacing = asyncio.create_task(rs.keeper.heartbeat_round([("S3", "gone")]))
        await entered.wait()
        removing = asyncio.create_task(rs.remove(2, ["S1"]))
        await asyncio.sleep(0)  # /rm runs up to the lock the replacement holds
        assert not removing.done() and rs.names() == ["S1", "S2"]
        release.set()
        await replacing
        removed, left = await removing
        assert removed[0] == "S1" and len(removed) == 2 and len(left) == 1
        assert left == rs.ring.servers == list(sup.running) and rs.target == 1
        await rs.close()

    run(scenario())


# ---- Part 2: the shard cluster on the keeper --------------------------------------------------

@pytest.fixture(scope="module")
def engine_uri(tmp_path_factory):
    engine = LocalEngine(tmp_path_factory.mktemp("keeper-meta"))
    uri = asyncio.run(engine.start())
    yield uri
    engine.stop()


_databases = itertools.count()


class Part2:
    """A shard cluster on stand-in servers: shard a on S1, S2, S3 and shard b on S4, S5."""

    def __init__(self, uri: str) -> None:
        self.sup = SteppedSupervisor()
        self.servers = SteppedShardServers(self.sup)
        self.client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(uri)
        self.meta_db = self.client[f"keeper{next(_databases)}"]
        self.cluster = ShardCluster(self.sup, Metadata(self.meta_db), rng=random.Random(3))
        self.cluster.servers.call = self.servers.call  # type: ignore[method-assign]
        self.clock = Clock()
        self.cluster.keeper.clock = self.clock

    async def __aenter__(self) -> Part2:
        await self.cluster.start(heartbeats=False)
        await self.cluster.init(InitRequest.model_validate(seed_init(
            N=5, shards=[{"Stud_id_low": 0, "Shard_id": "a", "Shard_size": 100},
                         {"Stud_id_low": 100, "Shard_id": "b", "Shard_size": 100}],
            servers={"S1": ["a"], "S2": ["a"], "S3": ["a"], "S4": ["b"], "S5": ["b"]})))
        await self.cluster.write([row(i) for i in (1, 2, 3, 101, 102)])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cluster.close()
        await self.client.close()

    def holders(self, shard: str) -> list[str]:
        return sorted(n for n, s in self.cluster.status()["servers"].items() if shard in s)

    def rows(self, name: str, shard: str) -> list[int]:
        return sorted(self.sup.data[name][shard])

    async def saved_servers(self) -> list[str]:
        return sorted([d["Server_id"] async for d in self.meta_db.ServerT.find()])


def test_a_replacement_that_fails_half_way_is_undone_and_retried(engine_uri):
    """S3 dies; its newcomer starts and is configured, but its refill is refused: the newcomer
    is retired with its data, nothing about S3 changes (placement, metadata, S3's data), and
    once the refill can work, the next round after the backoff replaces S3."""

    async def scenario():
        async with Part2(engine_uri) as p:
            p.sup.kill("S3")
            refused = {}

            async def refuse_newcomers(name, path, payload):
                if path == "/write" and name not in {"S1", "S2", "S3", "S4", "S5"}:
                    refused[name] = True
                    p.servers.refuse.add((name, "/write"))

            p.servers.before = refuse_newcomers
            await p.cluster.keeper.heartbeat_round([("S3", "gone")])
            [newcomer] = refused
            assert newcomer not in p.sup.running and newcomer in p.sup.discarded
            assert "S3" not in p.sup.discarded and p.rows("S3", "a") == [1, 2, 3]
            assert p.holders("a") == ["S1", "S2", "S3"] and p.cluster.keeper.evicted() == ["S3"]
            assert sorted(p.cluster.rings["a"].servers) == ["S1", "S2"]
            assert await p.saved_servers() == ["S1", "S2", "S3", "S4", "S5"]

            p.servers.before = None
            p.clock.now += p.cluster.keeper.backoff
            await p.cluster.keeper.heartbeat_round([])
            holders = p.holders("a")
            assert "S3" not in holders and len(holders) == 3 and "S3" in p.sup.discarded
            assert all(p.rows(name, "a") == [1, 2, 3] for name in holders)
            assert sorted(p.cluster.rings["a"].servers) == holders
            assert await p.saved_servers() == sorted([*holders, "S4", "S5"])
            assert p.cluster.in_sync["a"] == set(holders)

    run(scenario())


def test_a_refill_whose_source_dies_copies_from_the_next_replica(engine_uri):
    """S3's newcomer asks one replica of a for its rows; that replica dies as it is asked.
    The copy fails over along the ring to the other live replica; the dead source is
    replaced on the next round; every holder of a ends with every row."""

    async def scenario():
        async with Part2(engine_uri) as p:
            p.sup.kill("S3")
            sources = []

            async def kill_the_first_source(name, path, payload):
                if path == "/copy" and not sources:
                    sources.append(name)
                    p.sup.kill(name)

            p.servers.before = kill_the_first_source
            await p.cluster.keeper.heartbeat_round([("S3", "gone")])
            [source] = sources
            assert source in {"S1", "S2"}
            holders = p.holders("a")
            newcomer = next(n for n in holders if n not in {"S1", "S2", "S3"})
            assert p.rows(newcomer, "a") == [1, 2, 3]
            await p.cluster.keeper.heartbeat_round([(source, "gone")])
            holders = p.holders("a")
            assert source not in holders and len(holders) == 3
            assert all(p.rows(name, "a") == [1, 2, 3] for name in holders)
            assert sorted(p.cluster.rings["a"].servers) == holders
            reads = {tuple(r["Stud_id"] for r in (await p.cluster.read(0, 99))[1])
                     for _ in range(10)}
            assert reads == {(1, 2, 3)}

    run(scenario())


def test_a_refill_with_no_source_left_is_abandoned_and_the_dead_server_kept(engine_uri):
    """Both other replicas of a die while S3's newcomer is being refilled: there is nothing to
    copy from, the newcomer is retired, and S3 (with its data) stays the shard's hope."""

    async def scenario():
        async with Part2(engine_uri) as p:
            p.sup.kill("S3")

            async def kill_every_source(name, path, payload):
                if path == "/copy":
                    p.sup.kill("S1")
                    p.sup.kill("S2")

            p.servers.before = kill_every_source
            await p.cluster.keeper.heartbeat_round([("S3", "gone")])
            newcomers = [n for n in p.sup.spawned if n not in {"S1", "S2", "S3", "S4", "S5"}]
            assert len(newcomers) == 1 and newcomers[0] not in p.sup.running
            assert p.holders("a") == ["S1", "S2", "S3"] and p.rows("S3", "a") == [1, 2, 3]
            assert "S3" not in p.sup.discarded
            with pytest.raises(Unavailable):
                await p.cluster.read(0, 99)

    run(scenario())


def test_a_server_evicted_during_a_refill_is_replaced_on_the_next_round(engine_uri):
    """While S3's newcomer is being refilled, a write elsewhere evicts S1 (stepped here by
    evicting it directly at that moment): the refill finishes, S1 is out of every ring at once
    and not replaced in this round, and the next round replaces it too."""

    async def scenario():
        async with Part2(engine_uri) as p:
            p.sup.kill("S3")

            async def evict_s1_mid_refill(name, path, payload):
                if path == "/write" and name not in {"S1", "S2", "S3", "S4", "S5"}:
                    p.servers.before = None
                    p.sup.kill("S1")
                    p.cluster.keeper.evict("S1", "a write failed on it")

            p.servers.before = evict_s1_mid_refill
            await p.cluster.keeper.heartbeat_round([("S3", "gone")])
            assert "S1" not in p.cluster.rings["a"] and p.cluster.keeper.evicted() == ["S1"]
            assert "S1" in p.holders("a") and "S3" not in p.holders("a")
            await p.cluster.keeper.heartbeat_round([])
            holders = p.holders("a")
            assert "S1" not in holders and len(holders) == 3 and p.cluster.keeper.evicted() == []
            assert all(p.rows(name, "a") == [1, 2, 3] for name in holders)
            assert p.cluster.in_sync["a"] == set(holders) == set(p.cluster.rings["a"].servers)

    run(scenario())


def test_rm_racing_a_replacement(engine_uri):
    """/rm of S3 while S3's replacement is being refilled waits for it and then finds no S3
    (it was replaced); /rm of a dead server before its round removes it, and no replacement is
    started at all."""

    async def scenario():
        async with Part2(engine_uri) as p:
            p.sup.kill("S3")
            entered, release = asyncio.Event(), asyncio.Event()

            async def gate(name, path, payload):
                if path == "/copy":
                    entered.set()
                    await release.wait()

            p.servers.before = gate
            replacing = asyncio.create_task(p.cluster.keeper.heartbeat_round([("S3", "gone")]))
            await entered.wait()
            removing = asyncio.create_task(p.cluster.rm(RmRequest(n=1, servers=["S3"])))
            await asyncio.sleep(0)
            assert not removing.done()
            release.set()
            await replacing
            with pytest.raises(BadRequest, match="do not exist: S3"):
                await removing
            assert len(p.holders("a")) == 3

            p.servers.before = None
            p.sup.kill("S4")
            p.cluster.keeper.evict("S4", "a write failed on it")
            spawned = len(p.sup.spawned)
            assert await p.cluster.rm(RmRequest(n=1, servers=["S4"])) == (4, ["S4"])
            await p.cluster.keeper.heartbeat_round([("S4", "gone")])
            assert len(p.sup.spawned) == spawned and p.cluster.keeper.evicted() == []
            assert p.holders("b") == ["S5"] and "S4" in p.sup.discarded
            assert "S4" not in await p.saved_servers()

    run(scenario())
