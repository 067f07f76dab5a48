"""Part 2 under ``--replication majority``, on the process backend: each shard's primary
logs its changes and acknowledges on a majority. The contract's own tests run on both designs
(test_db_api.py); these show what only the log can do, each fault's effect asserted: a paused
secondary delays no write (acknowledged while it is still a member: under ``all`` a write
waits for it until it is evicted), a killed primary is replaced (the primary changed, the
term grew) and nothing acknowledged is lost."""

from __future__ import annotations

import os
import re
import signal
import time

import httpx
import pytest

from conftest import SEED_SERVERS, detection_time, row, seed_init, shard_rows

ARGS = ("--replication", "majority")


def primaries(client: httpx.Client) -> dict[str, tuple[str, int]]:
    """Each elected shard's (primary, term), from /metrics."""
    text = client.get("/metrics").text
    terms = {m[1]: int(float(m[2])) for m in
             re.finditer(r'^dslab_db_shard_term\{shard="(\w+)"\} (\S+)$', text, re.M)}
    return {m[2]: (m[1], terms[m[2]]) for m in re.finditer(
        r'^dslab_db_shard_primary\{server="(\w+)",shard="(\w+)"\} 1\.0$', text, re.M)}


def evictions(client: httpx.Client) -> int:
    found = re.search(r"^dslab_evictions_total (\S+)$", client.get("/metrics").text, re.M)
    assert found is not None
    return int(float(found[1]))


@pytest.fixture
def seeded(start_db):
    db = start_db(*ARGS)
    client = httpx.Client(base_url=db.url, timeout=60)
    assert client.post("/init", json=seed_init()).status_code == 200
    yield db, client
    client.close()


def write_until_acknowledged(client: httpx.Client, rows: list[dict], within: float
                             ) -> list[str]:
    """Write ``rows`` until acknowledged (or found written by a try whose outcome was
    unknown); the messages of the 503s met on the way. Anything else fails the test."""
    deadline = time.monotonic() + within
    unknown: list[str] = []
    while True:
        answer = client.post("/write", json={"data": rows})
        if answer.status_code == 200 or (answer.status_code == 409 and unknown):
            return unknown
        assert answer.status_code == 503 and answer.json()["status"] == "failure", answer.text
        unknown.append(answer.json()["message"])
        assert time.monotonic() < deadline, unknown


def sh1_rows(ids) -> list[dict]:
    return [row(i) for i in ids]


def test_each_shard_gets_a_primary_shown_in_the_metrics(seeded):
    db, client = seeded
    assert client.post("/write", json={"data": [row(1), row(5000), row(9000), row(13000)]}
                       ).status_code == 200
    elected = primaries(client)
    assert set(elected) == {"sh1", "sh2", "sh3", "sh4"}
    for shard, (primary, term) in elected.items():
        assert shard in SEED_SERVERS[primary] and term == 1


def test_a_paused_secondary_delays_no_write(seeded):
    db, client = seeded
    assert client.post("/write", json={"data": [row(1)]}).status_code == 200
    primary, _ = primaries(client)["sh1"]
    secondary = next(n for n, shards in SEED_SERVERS.items() if "sh1" in shards and n != primary)
    pid = db.replica_processes()[secondary].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(2, 5):  # well within the heartbeats' detection time
            assert client.post("/write", json={"data": [row(i)]}).status_code == 200
            # Acknowledged before anyone was evicted: the write did not wait for the
            # heartbeats to evict the paused server (under `all` it must).
            assert evictions(client) == 0, i
    finally:
        os.kill(pid, signal.SIGCONT)
    read = client.post("/read", json={"Stud_id": {"low": 0, "high": 4095}}).json()["data"]
    assert read == sh1_rows(range(1, 5))


def test_a_killed_primary_is_replaced_and_nothing_acknowledged_is_lost(seeded):
    db, client = seeded
    rows = sh1_rows(range(1, 40))
    assert client.post("/write", json={"data": rows}).status_code == 200
    assert client.put("/update", json={"Stud_id": 7, "data": row(7, 99)}).status_code == 200
    primary, term = primaries(client)["sh1"]
    os.kill(db.replica_processes()[primary].pid, signal.SIGKILL)

    # Usually acknowledged at once by the next primary. A try may meet the heartbeats evicting
    # the dead server (a membership change: a new term, which fails the changes in flight at
    # the primary, outcome unknown): then a 503 that says so, and the client tries again.
    unknown = write_until_acknowledged(client, [row(40)],
                                       within=detection_time("dslab.db", *ARGS) + 60)
    assert all("may or may not" in m or "No primary" in m for m in unknown), unknown
    new_primary, new_term = primaries(client)["sh1"]
    assert new_primary != primary and new_term > term
    expected = [row(i, 99) if i == 7 else row(i) for i in range(1, 41)]
    read = client.post("/read", json={"Stud_id": {"low": 0, "high": 4095}}).json()["data"]
    assert read == expected

    # The heartbeats evict the dead server and a replacement joins sh1 through the log:
    # it holds every row once it is one of sh1's servers.
    deadline = time.monotonic() + detection_time("dslab.db", *ARGS) + 60
    while primary in client.get("/status").json()["servers"] or len(
            [n for n, s in client.get("/status").json()["servers"].items() if "sh1" in s]) < 3:
        assert time.monotonic() < deadline, "no replacement joined sh1"
        time.sleep(0.2)
    servers = client.get("/status").json()["servers"]
    newcomer = next(n for n, s in servers.items() if "sh1" in s and n not in SEED_SERVERS)
    assert shard_rows(db, newcomer, "sh1") == expected


def test_any_reads_ask_any_server_and_see_what_it_applied(start_db):
    """--read-consistency any under majority: reads go to any server of the shard (they may
    be behind the primary); once the secondaries applied a write, every read sees it."""
    db = start_db(*ARGS, "--read-consistency", "any")
    with httpx.Client(base_url=db.url, timeout=60) as client:
        assert client.post("/init", json=seed_init()).status_code == 200
        assert client.post("/write", json={"data": sh1_rows(range(1, 9))}).status_code == 200
        deadline = time.monotonic() + 10  # a few of the primary's heartbeats (0.1 s)
        while True:
            seen = {tuple(r["Stud_id"] for r in client.post(
                "/read", json={"Stud_id": {"low": 0, "high": 4095}}).json()["data"])
                for _ in range(12)}
            if seen == {tuple(range(1, 9))}:
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)
        holders = [n for n, s in SEED_SERVERS.items() if "sh1" in s]
        assert all(shard_rows(db, n, "sh1") == sh1_rows(range(1, 9)) for n in holders)


def test_a_shard_that_lost_its_majority_comes_back_on_its_servers_journals(seeded):
    """Two of sh1's three servers killed: no set without them can be elected (a write
    committed on those two may be on no one else), so they are not replaced but started again
    in place, on their journaled logs; sh1 serves again with every acknowledged row."""
    db, client = seeded
    rows = sh1_rows(range(1, 30))
    assert client.post("/write", json={"data": rows}).status_code == 200
    primary, term = primaries(client)["sh1"]
    secondary = next(n for n, s in SEED_SERVERS.items() if "sh1" in s and n != primary)
    for name in (primary, secondary):
        os.kill(db.replica_processes()[name].pid, signal.SIGKILL)

    deadline = time.monotonic() + detection_time("dslab.db", *ARGS) + 60
    while True:
        answer = client.post("/write", json={"data": [row(100)]}, timeout=30)
        if answer.status_code == 200:
            break
        assert answer.status_code == 503, answer.text
        assert time.monotonic() < deadline, "sh1 never served again"
        time.sleep(0.5)
    servers = client.get("/status").json()["servers"]
    assert {primary, secondary} <= set(servers)  # the same servers, not replacements
    read = client.post("/read", json={"Stud_id": {"low": 0, "high": 4095}}).json()["data"]
    assert read == rows + [row(100)]
    assert primaries(client)["sh1"][1] > term
