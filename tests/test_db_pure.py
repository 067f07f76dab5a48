"""Part 2's pure logic: shard routing, payloads and rows, placement, the /add message, locks."""

from __future__ import annotations

import asyncio
import itertools
import json
import random

import pytest

from dslab.common.errors import BadRequest
from dslab.common.payload import parse_model
from dslab.contract.studdb import (
    AddRequest,
    InitRequest,
    RmRequest,
    Schema,
    expand_template,
    is_template,
    validate_row,
)
from dslab.db.http import add_message
from dslab.db.locks import LockTimeout, ShardLocks
from dslab.db.metadata import ClusterConfig
from dslab.db.placement import least_replicated, place_randomly, servers_of
from dslab.db.servers import ShardServers
from dslab.db.shardmap import Shard, ShardMap, ShardOverlap
from dslab.db.state import ClusterState

SEED_SHARDS = [Shard(0, "sh1", 4096), Shard(4096, "sh2", 4096), Shard(8192, "sh3", 4096),
               Shard(12288, "sh4", 4096)]
SCHEMA = Schema(columns=["Stud_id", "Stud_name", "Stud_marks"],
                dtypes=["Number", "String", "Number"])


# ---- routing -------------------------------------------------------------------------------------
def test_shard_for_respects_both_bounds():
    m = ShardMap(SEED_SHARDS)
    assert m.shard_for(0).shard_id == "sh1"
    assert m.shard_for(4095).shard_id == "sh1"
    assert m.shard_for(4096).shard_id == "sh2"
    assert m.shard_for(16383).shard_id == "sh4"
    assert m.shard_for(16384) is None and m.shard_for(-1) is None


def test_gaps_hold_nothing():
    m = ShardMap([Shard(0, "a", 10), Shard(100, "b", 10)])
    assert m.shard_for(50) is None
    assert [s.shard_id for s in m.shards_for_range(5, 105)] == ["a", "b"]
    assert m.shards_for_range(20, 90) == []


def test_range_to_shards_matches_the_contract_example():
    m = ShardMap(SEED_SHARDS)
    assert [s.shard_id for s in m.shards_for_range(1000, 8889)] == ["sh1", "sh2", "sh3"]
    assert [s.shard_id for s in m.shards_for_range(4096, 4096)] == ["sh2"]
    assert [s.shard_id for s in m.shards_for_range(4095, 4096)] == ["sh1", "sh2"]
    assert m.shards_for_range(9, 3) == []


def test_range_agrees_with_shard_for_on_random_ranges():
    m = ShardMap([Shard(0, "a", 7), Shard(7, "b", 3), Shard(20, "c", 50), Shard(90, "d", 1)])
    rng = random.Random(3)
    for _ in range(500):
        low = rng.randint(-5, 100)
        high = low + rng.randint(0, 40)
        expected = []
        for i in range(low, high + 1):
            s = m.shard_for(i)
            if s is not None and s.shard_id not in expected:
                expected.append(s.shard_id)
        assert [s.shard_id for s in m.shards_for_range(low, high)] == expected


def test_overlaps_and_duplicate_ids_are_refused():
    with pytest.raises(ShardOverlap, match="overlap"):
        ShardMap([Shard(0, "a", 10), Shard(9, "b", 10)])
    with pytest.raises(ShardOverlap, match="same Shard_id"):
        ShardMap([Shard(0, "a", 10), Shard(10, "a", 10)])
    with pytest.raises(ShardOverlap):
        ShardMap(SEED_SHARDS).with_shards([Shard(4000, "sh5", 200)])


def test_group_rows_by_shard_and_report_homeless_ids():
    rows = [{"Stud_id": i} for i in (1, 5000, 2, 99999, 4096)]
    groups, homeless = ShardMap(SEED_SHARDS).group(rows)
    assert {k: [r["Stud_id"] for r in v] for k, v in groups.items()} == {
        "sh1": [1, 2], "sh2": [5000, 4096]}
    assert homeless == [99999]


# ---- rows and payloads ---------------------------------------------------------------------------
def test_valid_row_is_returned_in_schema_order():
    row = validate_row(SCHEMA, {"Stud_marks": 27.5, "Stud_name": "GHI", "Stud_id": 2255})
    assert list(row) == ["Stud_id", "Stud_name", "Stud_marks"]


@pytest.mark.parametrize("row, fragment", [
    ({"Stud_id": "2255", "Stud_name": "A", "Stud_marks": 1}, "Stud_id must be an integer"),
    ({"Stud_id": 2.0, "Stud_name": "A", "Stud_marks": 1}, "Stud_id must be an integer"),
    ({"Stud_id": True, "Stud_name": "A", "Stud_marks": 1}, "Stud_id must be an integer"),
    ({"Stud_id": 1, "Stud_name": 5, "Stud_marks": 1}, "Stud_name must be a String"),
    ({"Stud_id": 1, "Stud_name": "A", "Stud_marks": "9"}, "Stud_marks must be a Number"),
    ({"Stud_id": 1, "Stud_name": "A", "Stud_marks": False}, "Stud_marks must be a Number"),
    ({"Stud_id": 1, "Stud_name": "A"}, "missing Stud_marks"),
    ({"Stud_id": 1, "Stud_name": "A", "Stud_marks": 1, "x": 2}, "unknown x"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_rows_say_why(row, fragment):
    with pytest.raises(BadRequest) as err:
        validate_row(SCHEMA, row)
    assert fragment in err.value.message and err.value.status == 400


def init_body(**changes):
    body = {"N": 3, "schema": SCHEMA.model_dump(),
            "shards": [s.as_config() for s in SEED_SHARDS[:2]],
            "servers": {"Server0": ["sh1", "sh2"], "Server1": ["sh1"], "Server[9]": ["sh2"]}}
    body.update(changes)
    return json.dumps(body).encode()


def test_init_accepts_the_seed_shape_and_templates():
    request = parse_model(InitRequest, init_body())
    assert request.N == 3 and request.schema_.columns[0] == "Stud_id"
    assert parse_model(InitRequest, init_body(servers=None, N=4)).servers is None


@pytest.mark.parametrize("changes, fragment", [
    ({"N": 2}, "N is 2 but servers lists 3"),
    ({"servers": {"Server0": ["sh1", "sh9"], "Server1": [], "Server2": ["sh2"]}}, "unknown shard(s): sh9"),
    ({"servers": {"Server0": ["sh1"], "Server1": ["sh1"], "Server2": ["sh1"]}}, "shard(s) with no server: sh2"),
    ({"servers": {"Server0": ["sh1", "sh1"], "Server1": ["sh2"], "Server2": []}}, "listed twice: sh1"),
    ({"servers": {"bad name": ["sh1", "sh2"], "S1": [], "S2": []}}, "not a valid server name"),
    ({"shards": [{"Stud_id_low": 0, "Shard_id": "sh1", "Shard_size": 0}]}, "greater than or equal to 1"),
    ({"shards": [{"Stud_id_low": 0, "Shard_id": "a b", "Shard_size": 5}]}, "not a valid Shard_id"),
    ({"schema": {"columns": ["id"], "dtypes": ["Number"]}}, "needs a Stud_id column"),
    ({"schema": {"columns": ["Stud_id", "x"], "dtypes": ["Number"]}}, "same length"),
    ({"schema": {"columns": ["Stud_id"], "dtypes": ["Date"]}}, "Input should be 'Number' or 'String'"),
    ({"servers": None, "N": 2, "replicas": 3}, "need at least as many servers"),
    ({"N": "3"}, "N: Input should be a valid integer"),
])
def test_inconsistent_init_is_refused(changes, fragment):
    with pytest.raises(BadRequest) as err:
        parse_model(InitRequest, init_body(**changes))
    assert fragment in err.value.message


def test_add_and_rm_payloads():
    add = parse_model(AddRequest, json.dumps({"n": 2, "new_shards": [], "servers": {
        "Server4": ["sh3"], "Server[5]": ["sh2"]}}).encode())
    assert add.n == 2 and list(add.servers) == ["Server4", "Server[5]"]
    with pytest.raises(BadRequest, match="listed twice"):
        parse_model(RmRequest, b'{"n": 2, "servers": ["S1", "s1"]}')


def test_templates():
    assert is_template("Server[5]") and is_template("Server[]") and not is_template("Server5")
    assert expand_template("Server[5]", 58127) == "Server58127"
    assert expand_template("Server4", 1) == "Server4"


def test_add_message_matches_the_contract():
    assert add_message(["Server4", "Server58127"]) == "Add Server:4 and Server:58127"
    assert add_message(["Server4"]) == "Add Server:4"
    assert add_message(["A1", "B2", "gamma"]) == "Add A:1, B:2 and gamma"


# ---- placement -----------------------------------------------------------------------------------
def test_random_placement_is_distinct_even_and_seeded():
    shards = [f"sh{k}" for k in range(1, 7)]
    servers = [f"Server{k}" for k in range(10)]
    placement = place_randomly(shards, servers, 8, random.Random(5))
    for shard in shards:
        assert len(servers_of(placement, shard)) == 8
    loads = sorted(len(v) for v in placement.values())
    assert loads[-1] - loads[0] <= 1  # 48 copies over 10 servers: 4 or 5 each
    assert placement == place_randomly(shards, servers, 8, random.Random(5))
    assert placement != place_randomly(shards, servers, 8, random.Random(6))
    with pytest.raises(ValueError):
        place_randomly(shards, servers[:2], 3, random.Random(1))


def test_least_replicated():
    placement = {"A": ["sh1", "sh2"], "B": ["sh1"], "C": ["sh3", "sh1"]}
    assert least_replicated(placement, ["sh1", "sh2", "sh3"]) == "sh2"


# ---- locks ---------------------------------------------------------------------------------------
def test_locks_serialize_one_shard_and_let_others_run():
    async def scenario():
        locks, order = ShardLocks(timeout=5), []

        async def job(name, shards, hold):
            async with locks.hold(shards):
                order.append(f"{name}+")
                await asyncio.sleep(hold)
                order.append(f"{name}-")

        await asyncio.gather(job("a", ["sh1"], 0.05), job("b", ["sh1"], 0.0),
                             job("c", ["sh2"], 0.0))
        return order

    order = asyncio.run(scenario())
    assert order.index("a-") < order.index("b+")  # same shard: one after the other, FIFO
    assert order.index("c-") < order.index("a-")  # another shard: not held up


def test_locks_taken_in_sorted_order_do_not_deadlock():
    async def scenario():
        locks = ShardLocks(timeout=2)

        async def job(shards):
            for _ in range(50):
                async with locks.hold(shards):
                    await asyncio.sleep(0)

        await asyncio.gather(job(["sh1", "sh2"]), job(["sh2", "sh1"]), job(["sh2"]))
        return not locks.locked("sh1") and not locks.locked("sh2")

    assert asyncio.run(scenario())


async def shared_read(locks, shard):
    async with locks.share(shard):
        pass


def test_reads_share_a_shard_and_never_overlap_a_change_of_it():
    """Linearizable reads: many at once, none while a change of the shard is applied; a
    change waiting goes before the reads that came after it."""
    async def scenario():
        locks, order = ShardLocks(timeout=5), []

        async def read(name, hold=0.02):
            async with locks.share("sh1"):
                order.append(f"{name}+")
                await asyncio.sleep(hold)
                order.append(f"{name}-")

        async def change(name):
            async with locks.hold(["sh1"]):
                order.append(f"{name}+")
                async with locks.share("sh1"):  # its owner may read what it changes
                    await asyncio.sleep(0.02)
                order.append(f"{name}-")

        first = [asyncio.create_task(read(f"r{k}")) for k in range(3)]
        await asyncio.sleep(0.005)
        writer = asyncio.create_task(change("w"))
        await asyncio.sleep(0.005)
        late = asyncio.create_task(read("late"))
        await asyncio.gather(*first, writer, late)
        return order

    order = asyncio.run(scenario())
    assert order[:3] == ["r0+", "r1+", "r2+"]  # shared
    assert order.index("w+") > max(order.index(f"r{k}-") for k in range(3))
    assert order.index("w-") == order.index("w+") + 1  # nothing read while it was applied
    assert order.index("late+") > order.index("w-")  # the waiting change went first


def test_a_lock_held_too_long_is_a_named_503():
    async def scenario():
        locks = ShardLocks(timeout=0.1)

        async def other_task():
            async with locks.hold(["sh2", "sh1"]):
                pass

        async with locks.hold(["sh1"]):
            with pytest.raises(LockTimeout) as err:
                await asyncio.create_task(other_task())
            with pytest.raises(LockTimeout):  # a linearizable read waits for the change too
                await asyncio.create_task(shared_read(locks, "sh1"))
        assert not locks.locked("sh2")  # the lock it did take was given back
        return err.value

    err = asyncio.run(scenario())
    assert err.status == 503 and "sh1 stayed locked" in err.message


# ---- salted per-shard rings -----------------------------------------------------------------------
ALL_FOUR = {"A1": ["sh1", "sh2", "sh3", "sh4"], "B2": ["sh1", "sh2", "sh3", "sh4"],
            "C3": ["sh1", "sh2", "sh3", "sh4"]}


def seeded_state(salted: bool = True) -> ClusterState:
    """The seed's four shards, every one held by the same three servers, all live."""
    state = ClusterState(salted_rings=salted)
    state.adopt(ClusterConfig(schema=None, placement=ALL_FOUR, shards=[  # type: ignore[arg-type]
        Shard(4096 * k, f"sh{k + 1}", 4096) for k in range(4)]))
    for ring in state.rings.values():
        for name in ALL_FOUR:
            ring.add(name)
    return state


def test_shards_held_by_the_same_servers_have_rings_laid_out_differently():
    state = seeded_state()
    ids = range(0, 1000000, 997)
    owners = {shard: [ring.lookup(i) for i in ids] for shard, ring in state.rings.items()}
    for a, b in itertools.combinations(owners, 2):
        assert sum(x != y for x, y in zip(owners[a], owners[b])) > len(ids) / 4, (a, b)
    first = {shard: max("A1 B2 C3".split(), key=owners[shard].count) for shard in owners}
    assert len(set(first.values())) > 1  # not the same server first on every shard
    unsalted = seeded_state(salted=False)  # as before: every shard the same layout
    assert all(unsalted.rings["sh1"].lookup(i) == unsalted.rings["sh2"].lookup(i) for i in ids)


def test_a_read_goes_where_its_shards_salted_ring_says_request_by_request():
    """The real ShardServers with the call injected: each read's server is the one the
    shard's ring names for the request id the balancer drew."""
    state = seeded_state()
    called: list[str] = []

    async def call(name, method, path, payload):
        called.append(name)
        return {"data": []}

    servers = ShardServers(lambda name: None, lambda: None, random.Random(5), call)
    draws = random.Random(5)

    async def reads():
        for k in range(300):
            shard = f"sh{k % 4 + 1}"
            await servers.ask_one(shard, state.rings[shard], "POST", "/read", {})

    asyncio.run(reads())
    predicted = [state.rings[f"sh{k % 4 + 1}"].lookup(draws.randint(0, 999999)) for k in range(300)]
    assert called == predicted
    assert len(set(called)) == 3
