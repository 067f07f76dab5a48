"""Part 2's worst failures: every server of a shard killed under writes, a server that missed
acknowledged writes, a multi-shard write whose second shard dies after the first one wrote.

What must hold: every acknowledged row is readable afterwards and held by every replica of
its shard; a server that missed a write never passes for the shard's data; nothing
half-written stays.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pymongo
import pytest

from conftest import (
    DbWriter,
    all_rows,
    assert_all_gone,
    assert_error,
    balancer_options,
    detection_time,
    free_port,
    row,
    seed_init,
    shard_rows,
    status,
)
from dslab.common.errors import Unavailable
from dslab.contract.studdb import InitRequest
from dslab.db.cluster import ShardCluster
from dslab.db.metadata import Metadata
from dslab.db.seed import shard_of
from dslab.engine import LocalEngine
from dslab.stack import BalancerProcess, wait_until
from dslab.supervisor import ProcessSupervisor, ReplicaSpec

SH1_SERVERS = ("Server0", "Server3", "Server5")  # every holder of sh1 in the seed's placement


def shard_state(meta_db) -> dict[str, tuple[int, list[str]]]:
    return {d["Shard_id"]: (d["valid_idx"], sorted(d["in_sync"])) for d in meta_db.ShardT.find()}


def test_every_server_of_a_shard_sigkilled_under_writes_comes_back_with_every_row(meta, start_db):
    uri, meta_db = meta
    db = start_db("--meta-uri", uri)
    with httpx.Client(base_url=db.url, timeout=60) as client:
        assert client.post("/init", json=seed_init()).status_code == 200
        victims = [db.replica_processes()[name] for name in SH1_SERVERS]
        engines = [p for v in victims for p in v.children()]
        with DbWriter(db.url) as writer:
            wait_until(lambda: writer.acked_in("sh1") > 30, 60, what="writes to sh1 before the kill")
            for victim in victims:
                os.kill(victim.pid, signal.SIGKILL)
            acked_at_kill = writer.acked_in("sh1")
            deadline = detection_time("dslab.db") + 60  # + restarting three servers, refills
            wait_until(lambda: writer.acked_in("sh1") > acked_at_kill + 30, deadline,
                       what="writes to sh1 acknowledged again")
        assert writer.wrong == []
        assert_all_gone(victims + engines)

        rows = client.post("/read", json={"Stud_id": {"low": 0, "high": 16383}}).json()["data"]
        held = [r["Stud_id"] for r in rows]
        assert set(writer.acked) <= set(held), "an acknowledged row was lost"
        # A 503 says "nothing written", and it is true: a refused row is not there (the rows
        # a dead replica may have stored unanswered are erased when it comes back).
        assert set(held) <= set(writer.acked), "a row of a refused write, or one nobody wrote"
        assert writer.refused and not set(held) & set(writer.refused)  # some were refused
        assert len(held) == len(set(held))

        # Servers in sync at the last acknowledged write came back in place; one that had
        # missed it (evicted earlier) is replaced under a new name: wait for those too.
        servers = wait_until(lambda: (s := client.get("/status").json()["servers"])
                             and set(s) == set(db.replica_ports()) and s,
                             detection_time("dslab.db") + 60, what="every server of /status up")
        assert sum("sh1" in shards for shards in servers.values()) == 3
        for server, shards in servers.items():  # every replica holds exactly what reads show
            for shard in shards:
                assert [r["Stud_id"] for r in shard_rows(db, server, shard)] == sorted(
                    i for i in held if shard_of(i) == shard), f"{server}:{shard}"
        state = shard_state(meta_db)
        for shard in ("sh1", "sh2", "sh3", "sh4"):
            holders = sorted(n for n, s in servers.items() if shard in s)
            assert state[shard] == (sum(shard_of(i) == shard for i in held), holders), shard


def test_a_server_that_missed_acknowledged_writes_is_never_the_source(meta, tmp_path):
    """S1 hangs, a write to shard a is acknowledged by S2 alone, and the balancer dies before
    S1 is replaced. Started again, the balancer must not let S1 serve a from its stale copy:
    it is made equal to S2 first."""
    uri, meta_db = meta
    state = tmp_path / "state"
    config = seed_init(N=4, shards=[{"Stud_id_low": 0, "Shard_id": "a", "Shard_size": 100},
                                    {"Stud_id_low": 100, "Shard_id": "b", "Shard_size": 100}],
                       servers={"S1": ["a"], "S2": ["a"], "S3": ["b"], "S4": ["b"]})
    args = ["--state-dir", str(state), "--meta-uri", uri, "--request-timeout", "1",
            "--heartbeat-misses", "1000"]  # S1 leaves because it failed a write, not heartbeats
    first = BalancerProcess("dslab.db", args=args).start()
    try:
        with httpx.Client(base_url=first.url, timeout=60) as client:
            assert client.post("/init", json=config).status_code == 200
            assert client.post("/write", json={"data": [row(1)]}).status_code == 200
            s1 = first.replica_processes()["S1"]
            os.kill(s1.pid, signal.SIGSTOP)
            assert client.post("/write", json={"data": [row(2)]}).status_code == 200
            tree = first.descendants()
            first.kill()  # before S1's replacement can finish (it starts an engine: seconds)
            os.kill(s1.pid, signal.SIGCONT)  # let the hung server see its parent's death
            assert_all_gone(tree)
    finally:
        first.kill()
    assert shard_state(meta_db)["a"] == (2, ["S2"])

    second = BalancerProcess("dslab.db", args=args).start()
    try:
        with httpx.Client(base_url=second.url, timeout=60) as client:
            assert client.get("/status").json()["servers"] == config["servers"]
            assert [r["Stud_id"] for r in shard_rows(second, "S1", "a")] == [1, 2]
            reads = {tuple(r["Stud_id"] for r in client.post(
                "/read", json={"Stud_id": {"low": 0, "high": 99}}).json()["data"]) for _ in range(20)}
            assert reads == {(1, 2)}
            assert shard_state(meta_db)["a"] == (2, ["S1", "S2"])
    finally:
        tree = second.descendants()
        assert second.stop() == 0
        assert_all_gone(tree)


def test_a_write_whose_second_shard_dies_after_the_first_wrote_is_undone(tmp_path: Path):
    """The order is stepped: the real shard servers of shard b are SIGKILLed just as the
    balancer sends them b's part of a write, after a's part was applied. The write is refused
    and a's part is erased again on every replica of a."""

    async def scenario() -> None:
        engine = LocalEngine(tmp_path / "meta")
        meta_uri = await engine.start()
        client: pymongo.AsyncMongoClient[dict[str, object]] = pymongo.AsyncMongoClient(meta_uri)
        supervisor = ProcessSupervisor(ReplicaSpec(
            module="dslab.shard", env={"SHARD_DATA_ROOT": str(tmp_path / "servers")}))
        stepping = False
        a_written = asyncio.Event()

        async def stepped(name, method, path, payload):
            """The real call; while stepping, b's insert waits for a's on both its servers,
            then b's servers are SIGKILLed before it goes out."""
            if stepping and path == "/insert" and payload["shard"] == "b":
                await a_written.wait()
                for victim in ("S3", "S4"):
                    os.kill(supervisor.pid(victim), signal.SIGKILL)
            answer = await cluster.servers.call_over_pool(name, method, path, payload)
            if stepping and path == "/insert" and payload["shard"] == "a" and name == "S2":
                a_written.set()
            return answer

        cluster = ShardCluster(supervisor, Metadata(client["meta"]), data_root=tmp_path / "servers",
                               heartbeat_interval=60,  # no heartbeat round interferes
                               call_server=stepped)
        try:
            await cluster.start()
            await cluster.init(InitRequest.model_validate(seed_init(
                N=4, shards=[{"Stud_id_low": 0, "Shard_id": "a", "Shard_size": 100},
                             {"Stud_id_low": 100, "Shard_id": "b", "Shard_size": 100}],
                servers={"S1": ["a"], "S2": ["a"], "S3": ["b"], "S4": ["b"]})))
            await cluster.write([row(1), row(101)])
            stepping = True
            with pytest.raises(Unavailable):
                await cluster.write([row(2), row(102)])
            stepping = False
            for name in ("S1", "S2"):
                rows = await cluster.servers.call(name, "GET", "/copy", {"shards": ["a"]})
                assert [r["Stud_id"] for r in rows["a"]] == [1], name
            assert cluster.valid_idx == {"a": 1, "b": 1}
            assert sorted(cluster.in_sync["a"]) == ["S1", "S2"]
            assert sorted(cluster.rings["a"].servers) == ["S1", "S2"]
        finally:
            await cluster.close()
            await client.close()
            engine.stop()

    asyncio.run(scenario())


def test_with_the_metadata_store_down_every_change_is_a_503_and_nothing_changes(tmp_path, start_db):
    """Configuration and data changes are saved before they are adopted or acknowledged:
    with the metadata store down, each is refused whole and leaves memory, /status, the rows
    and the servers as they were; once it is back, the same requests succeed. (An update that
    changes neither the row count nor the in-sync servers records nothing, and is served.)"""
    engine = LocalEngine(tmp_path / "meta" / "engine", port=free_port())
    uri = asyncio.run(engine.start())
    db = start_db("--meta-uri", uri, "--meta-timeout", "1")
    with httpx.Client(base_url=db.url, timeout=60) as client:
        assert client.post("/init", json=seed_init()).status_code == 200
        assert client.post("/write", json={"data": [row(1), row(4097)]}).status_code == 200
        before = (client.get("/status").json(), all_rows(client))
        servers = {name: p.pid for name, p in db.replica_processes().items()}
        engine.stop()
        changes = [
            ("POST", "/add", {"n": 1, "new_shards": [{"Stud_id_low": 16384, "Shard_id": "sh5",
                                                     "Shard_size": 100}], "servers": {"S9": ["sh5", "sh1"]}}),
            ("DELETE", "/rm", {"n": 1, "servers": ["Server0"]}),
            ("POST", "/write", {"data": [row(2), row(8200)]}),
            ("DELETE", "/del", {"Stud_id": 4097}),
        ]
        for method, path, body in changes:
            assert_error(client.request(method, path, json=body), 503)
            assert (client.get("/status").json(), all_rows(client)) == before, path
            assert {n: p.pid for n, p in db.replica_processes().items()} == servers, path
        for server, shards in before[0]["servers"].items():  # every replica as it was
            for shard in shards:
                assert shard_rows(db, server, shard) == [
                    r for r in before[1] if shard_of(r["Stud_id"]) == shard], f"{server}:{shard}"

        # A server that dies now cannot be replaced (the replacement is saved first): for
        # several heartbeat rounds /status still names it (each attempt's newcomer is stopped
        # again when the save fails).
        os.kill(db.replica_processes()["Server6"].pid, signal.SIGKILL)
        deadline = time.monotonic() + 3 * detection_time("dslab.db")
        while time.monotonic() < deadline:
            assert status(client) == before[0]
            time.sleep(balancer_options("dslab.db").heartbeat_interval)

        asyncio.run(engine.start())  # back on the same port: the same requests now succeed
        try:
            wait_until(lambda: "Server6" not in client.get("/status").json()["servers"],
                       detection_time("dslab.db") + 30, what="Server6 to be replaced")
            # exactly the servers /status names run: no newcomer of a failed attempt is left
            assert set(db.replica_processes()) == set(client.get("/status").json()["servers"])
            for method, path, body in changes:
                response = client.request(method, path, json=body)
                assert response.status_code == 200, (path, response.text)
        finally:
            db_tree = db.descendants()
            assert db.stop() == 0
            assert_all_gone(db_tree)
            engine.stop()


def test_init_with_the_metadata_store_down_is_a_503_and_starts_nothing(tmp_path, start_db):
    engine = LocalEngine(tmp_path / "meta" / "engine", port=free_port())
    uri = asyncio.run(engine.start())
    db = start_db("--meta-uri", uri, "--meta-timeout", "1")
    engine.stop()
    with httpx.Client(base_url=db.url, timeout=60) as client:
        assert_error(client.post("/init", json=seed_init()), 503)
        assert db.replica_processes() == {}
        assert_error(client.get("/status"), 404)
        asyncio.run(engine.start())
        try:
            assert client.post("/init", json=seed_init()).status_code == 200
            assert client.get("/status").json()["servers"] == seed_init()["servers"]
        finally:
            db_tree = db.descendants()
            assert db.stop() == 0
            assert_all_gone(db_tree)
            engine.stop()
