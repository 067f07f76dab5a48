"""Part 2 under concurrency and failure: parallel writers, a shard server killed mid-write, a
shard with no live replica, the balancer restarted (cleanly or killed) with its data in place."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import (
    SPAWN_BUDGET,
    DbWriter,
    all_rows,
    assert_all_gone,
    assert_error,
    detection_time,
    row,
    seed_init,
    shard_rows,
    status,
)
from dslab.db.seed import shard_of
from dslab.stack import BalancerProcess, wait_until


def assert_replicas_hold(db: BalancerProcess, client: httpx.Client, expected: dict[str, list[int]]):
    """Every replica of every shard holds exactly the expected Stud_ids."""
    for server, shards in status(client)["servers"].items():
        for shard in shards:
            held = [r["Stud_id"] for r in shard_rows(db, server, shard)]
            assert held == sorted(expected.get(shard, [])), f"{server}:{shard}"


def test_parallel_writes_lose_nothing_and_duplicate_nothing(meta, start_db):
    uri, meta_db = meta
    db = start_db("--meta-uri", uri)
    ids = list(range(0, 16384, 41))  # spread over the four shards
    batches = [ids[k:k + 5] for k in range(0, len(ids), 5)]
    with httpx.Client(base_url=db.url, timeout=60) as client:
        assert client.post("/init", json=seed_init()).status_code == 200
        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(
                lambda batch: client.post("/write", json={"data": [row(i) for i in batch]}).status_code,
                batches))
        assert codes == [200] * len(batches)
        assert [r["Stud_id"] for r in all_rows(client)] == ids
        expected: dict[str, list[int]] = {}
        for i in ids:
            expected.setdefault(shard_of(i), []).append(i)
        assert_replicas_hold(db, client, expected)
        valid_idx = {d["Shard_id"]: d["valid_idx"] for d in meta_db.ShardT.find()}
        assert valid_idx == {shard: len(rows) for shard, rows in expected.items()}

        # Racing writers of the same ids: exactly one wins each race, never both.
        races = [[row(20 + k)] for k in range(10)] * 2
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda data: client.post("/write", json={"data": data}).status_code, races))
        assert Counter(codes) == {200: 10, 409: 10}
        assert Counter(r["Stud_id"] for r in all_rows(client)).most_common(1)[0][1] == 1


def test_shard_server_killed_while_writes_go_on(start_db):
    db = start_db()
    with httpx.Client(base_url=db.url, timeout=60) as client:
        assert client.post("/init", json=seed_init()).status_code == 200
        victim = db.replica_processes()["Server0"]
        engine = victim.children()[0]
        with DbWriter(db.url) as writer:
            wait_until(lambda: len(writer.acked) > 150, 60, what="writes before the kill")
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            servers = wait_until(lambda: (s := status(client)["servers"]) and "Server0" not in s
                                 and len(s) == 6 and s, 30, what="Server0 to be replaced")
            replaced_after = time.monotonic() - killed_at
            acked_at_replacement = len(writer.acked)
            wait_until(lambda: len(writer.acked) > acked_at_replacement + 150, 60,
                       what="writes after the replacement")
        assert writer.wrong == [] and writer.refused == []  # not one write failed
        newcomer = (set(servers) - {"Server1", "Server3", "Server4", "Server5", "Server6"}).pop()
        assert servers[newcomer] == ["sh1", "sh2"]
        assert replaced_after < detection_time("dslab.db") + SPAWN_BUDGET["shard"]
        assert_all_gone([engine])  # the killed server's engine followed it
        expected: dict[str, list[int]] = {}
        for i in writer.acked:
            expected.setdefault(shard_of(i), []).append(i)
        assert_replicas_hold(db, client, expected)
        assert sorted(writer.acked) == [r["Stud_id"] for r in all_rows(client)]


def test_a_shard_whose_servers_all_hang_refuses_writes_then_comes_back_by_itself(start_db):
    db = start_db()
    config = seed_init(N=4, shards=[{"Stud_id_low": 0, "Shard_id": "a", "Shard_size": 100},
                                    {"Stud_id_low": 100, "Shard_id": "b", "Shard_size": 100}],
                       servers={"S1": ["a"], "S2": ["a"], "S3": ["b"], "S4": ["b"]})
    with httpx.Client(base_url=db.url, timeout=60) as client:
        assert client.post("/init", json=config).status_code == 200
        assert client.post("/write", json={"data": [row(1), row(101)]}).status_code == 200
        procs = db.replica_processes()
        for name in ("S1", "S2"):
            os.kill(procs[name].pid, signal.SIGSTOP)
        try:
            response = client.post("/write", json={"data": [row(2), row(102)]})
        finally:
            for name in ("S1", "S2"):
                if procs[name].is_running():
                    os.kill(procs[name].pid, signal.SIGCONT)
        assert_error(response, 503)
        assert "nothing written" in response.json()["message"]
        assert [r["Stud_id"] for r in shard_rows(db, "S3", "b")] == [101]  # b's part undone

        # Both hung servers are stopped and started again in place, on their own data: the
        # same names, the acknowledged row, and writes taken again. The shard serves again
        # from the first of them back; the other catches up from it after.
        deadline = detection_time("dslab.db") + 20  # + stopping and restarting two engines
        wait_until(lambda: client.post("/read", json={"Stud_id": {"low": 0, "high": 99}})
                   .status_code == 200, deadline, interval=0.2, what="shard a to come back")
        assert status(client)["servers"] == config["servers"]
        wait_until(lambda: set(db.replica_ports()) == {"S1", "S2", "S3", "S4"}, deadline,
                   interval=0.2, what="both hung servers listening again")
        assert not procs["S1"].is_running() and not procs["S2"].is_running()
        assert client.post("/write", json={"data": [row(2), row(102)]}).status_code == 200
        assert [r["Stud_id"] for r in all_rows(client)] == [1, 2, 101, 102]

        def caught_up():
            try:
                assert_replicas_hold(db, client, {"a": [1, 2], "b": [101, 102]})
            except AssertionError:
                return False
            return True
        wait_until(caught_up, deadline, interval=0.2, what="every replica holding every row")


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_balancer_restarted_with_data_in_place(tmp_path, how):
    state = tmp_path / "state"
    first = BalancerProcess("dslab.db", args=["--state-dir", str(state)]).start()
    try:
        with httpx.Client(base_url=first.url, timeout=60) as client:
            assert client.post("/init", json=seed_init()).status_code == 200
            rows = [row(i) for i in range(0, 16384, 97)]
            assert client.post("/write", json={"data": rows}).status_code == 200
            assert client.request("DELETE", "/del", json={"Stud_id": 97}).status_code == 200
            before_status, before_rows = status(client), all_rows(client)
        tree = first.descendants()
        if how == "sigterm":
            assert first.stop() == 0
        else:
            first.kill()  # a crash: the kernel's parent-death signal takes the servers down
        assert_all_gone(tree)
    finally:
        first.kill()
    second = BalancerProcess("dslab.db", args=["--state-dir", str(state)]).start()
    try:
        with httpx.Client(base_url=second.url, timeout=60) as client:
            assert status(client) == before_status
            assert all_rows(client) == before_rows == [r for r in rows if r["Stud_id"] != 97]
            assert client.post("/write", json={"data": [row(97)]}).status_code == 200
            expected: dict[str, list[int]] = {}
            for r in rows:
                expected.setdefault(shard_of(r["Stud_id"]), []).append(r["Stud_id"])
            assert_replicas_hold(second, client, expected)
    finally:
        tree = second.descendants()
        assert second.stop() == 0
        assert_all_gone(tree)


def test_a_shard_larger_than_a_request_body_is_refilled_in_chunks(start_db):
    """Twelve rows of 1 MiB: each write fits a request, the shard (12 MiB) does not. A killed
    server's replacement is refilled in chunks under the body limit and holds every row."""
    db = start_db()
    config = seed_init(N=2, shards=[{"Stud_id_low": 0, "Shard_id": "a", "Shard_size": 100}],
                       servers={"S1": ["a"], "S2": ["a"]})
    big = "n" * (1 << 20)
    with httpx.Client(base_url=db.url, timeout=60) as client:
        assert client.post("/init", json=config).status_code == 200
        for i in range(12):
            data = [{"Stud_id": i, "Stud_name": big, "Stud_marks": i}]
            assert client.post("/write", json={"data": data}).status_code == 200
        os.kill(db.replica_processes()["S1"].pid, signal.SIGKILL)
        servers = wait_until(lambda: (s := status(client)["servers"]) and "S1" not in s
                             and len(s) == 2 and s,
                             detection_time("dslab.db") + SPAWN_BUDGET["shard"] + 30,
                             what="S1 to be replaced and refilled")
        newcomer = (set(servers) - {"S2"}).pop()
        held = shard_rows(db, newcomer, "a")
        assert [r["Stud_id"] for r in held] == list(range(12))
        assert all(r["Stud_name"] == big for r in held)
