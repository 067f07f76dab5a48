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
import random

import pytest

from dslab.balancer.membership import ReplicaSet
from dslab.common.errors import BadRequest, Unavailable
from dslab.contract.studdb import RmRequest
from dslab.ring import ConsistentHashRing
from standins import Clock, Part2, SteppedSupervisor


def run(coro):
    return asyncio.run(coro)


# ---- Part 1: the replica set on the keeper ----------------------------------------------------

def replica_set() -> tuple[ReplicaSet, SteppedSupervisor, Clock]:
    sup = SteppedSupervisor()
    clock = Clock()
    rs = ReplicaSet(sup, ConsistentHashRing(hashes="blake2b"), rng=random.Random(7), clock=clock)
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


def test_replicas_dead_together_are_replaced_together_each_under_a_name_of_its_own():
    async def scenario():
        rs, sup, _ = replica_set()
        await rs.start(["S1", "S2", "S3"], heartbeats=False)
        starting: list[str] = []
        all_starting = asyncio.Event()

        async def gate(name: str) -> None:
            starting.append(name)
            if len(starting) == 3:
                all_starting.set()
            # Replaced one after the other, the first start would wait here for starts that
            # never come; together, the others join it within a few turns of the loop (no I/O).
            await asyncio.wait_for(all_starting.wait(), timeout=rs.keeper.backoff)

        sup.before_spawn = gate
        for name in ("S1", "S2", "S3"):
            sup.kill(name)
        await rs.keeper.heartbeat_round([("S1", "gone"), ("S2", "gone"), ("S3", "gone")])
        assert len(set(starting)) == 3 and not set(starting) & {"S1", "S2", "S3"}
        assert sorted(rs.names()) == sorted(starting) == sorted(rs.ring.servers)
        assert sorted(sup.discarded) == ["S1", "S2", "S3"] and rs.keeper.replacements == 3
        await rs.close()

    run(scenario())


def test_one_replacement_failing_does_not_hold_back_the_others():
    async def scenario():
        rs, sup, clock = replica_set()
        await rs.start(["S1", "S2", "S3"], heartbeats=False)
        sup.kill("S1")
        sup.kill("S2")
        sup.fail_spawns = 1  # whichever start comes first fails
        await rs.keeper.heartbeat_round([("S1", "gone"), ("S2", "gone")])
        [waiting] = rs.keeper.evicted()
        assert rs.keeper.replacements == 1 and len(rs.names()) == 2 and "S3" in rs.names()
        assert sup.discarded == [{"S1": "S2", "S2": "S1"}[waiting]]  # the replaced one's data
        clock.now += rs.keeper.backoff
        await rs.keeper.heartbeat_round([])
        assert rs.keeper.evicted() == [] and len(rs.names()) == 3 and rs.keeper.replacements == 2
        assert sorted(sup.discarded) == ["S1", "S2"]
        await rs.close()

    run(scenario())


def test_a_replacement_keeps_off_the_node_its_predecessor_died_on():
    async def scenario():
        rs, sup, clock = replica_set()
        sup.nodes = {"S1": "node1", "S2": "node2"}
        await rs.start(["S1", "S2"], heartbeats=False)
        sup.kill("S1")
        sup.fail_spawns = 1  # and still after a failed try: the node is remembered
        await rs.keeper.heartbeat_round([("S1", "gone")])
        clock.now += rs.keeper.backoff
        await rs.keeper.heartbeat_round([])
        [first, second] = sup.spawned[2:]
        assert sup.avoided[first] == sup.avoided[second] == {"node1"}
        assert rs.keeper.evicted() == [] and second in rs.names()
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
