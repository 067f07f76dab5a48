"""The Part 2 contract against a running database balancer with real shard servers and engines."""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import (
    SEED_SCHEMA,
    SEED_SERVERS,
    SEED_SHARDS,
    assert_error,
    row,
    seed_init,
    seeded_db,
    shard_rows,
)
from dslab.stack import BalancerProcess
from dslab.supervisor import is_dns_label

# Both designs of Part 2 keep the same contract: every test here runs on each.
REPLICATIONS = ["all", "majority"]
# Under majority a secondary applies what the primary's next append or heartbeat (0.1 s, the
# shard servers' default) tells it is committed, gathered for half an interval: a generous
# multiple of that.
CATCH_UP = 50 * 0.1


def held(db: BalancerProcess, server: str, shard: str, expected: list[dict],
         replication: str) -> list[dict]:
    """The rows ``server`` holds of ``shard``, asked directly: under all at once (a write is
    acknowledged once every replica has it), under majority once they are ``expected`` or
    ``CATCH_UP`` seconds have passed (a write is acknowledged once a majority journaled it)."""
    deadline = time.monotonic() + (CATCH_UP if replication == "majority" else 0.0)
    while True:
        rows = shard_rows(db, server, shard)
        if rows == expected or time.monotonic() >= deadline:
            return rows
        time.sleep(0.05)


@pytest.fixture(params=REPLICATIONS)
def replication(request) -> str:
    return request.param


@pytest.fixture
def db(start_db, replication):
    return start_db("--replication", replication)


@pytest.fixture
def client(db):
    with httpx.Client(base_url=db.url, timeout=60) as c:
        yield c


@pytest.fixture
def seeded(db, client):
    assert client.post("/init", json=seed_init()).json() == {
        "message": "Configured Database", "status": "success"}
    return client


@pytest.fixture(scope="module", params=REPLICATIONS)
def shared(tmp_path_factory, request):
    """One seeded stack for the tests that must leave it as they found it (rejections)."""
    with seeded_db(tmp_path_factory.mktemp("shared"), [row(2)],
                   ["--replication", request.param]) as stack:
        yield stack


def every_row(client: httpx.Client) -> list[dict]:
    response = client.post("/read", json={"Stud_id": {"low": 0, "high": 1 << 40}})
    assert response.status_code == 200
    return response.json()["data"]


def test_init_then_status_gives_the_configuration_back(shared):
    db, client = shared
    assert client.get("/status").json() == {
        "N": 6, "schema": SEED_SCHEMA, "shards": SEED_SHARDS, "servers": SEED_SERVERS}
    assert set(db.replica_processes()) == set(SEED_SERVERS)


def test_init_twice_is_refused(shared):
    _, client = shared
    assert_error(client.post("/init", json=seed_init()), 409)
    assert client.get("/status").json()["servers"] == SEED_SERVERS


def test_init_without_servers_places_shards_at_random(client, db):
    assert_error(client.get("/status"), 404)
    assert_error(client.post("/write", json={"data": [row(1)]}), 400)
    body = seed_init(N=5, replicas=3)
    del body["servers"]
    assert client.post("/init", json=body).status_code == 200
    servers = client.get("/status").json()["servers"]
    assert sorted(servers) == [f"Server{k}" for k in range(5)]
    for shard in ("sh1", "sh2", "sh3", "sh4"):
        assert sum(shard in shards for shards in servers.values()) == 3
    assert set(db.replica_processes()) == set(servers)


def test_write_read_update_delete(seeded, db, replication):
    rows = [row(2255, 27), row(5000), row(9000), row(13000), row(4095)]
    assert seeded.post("/write", json={"data": rows}).json() == {
        "message": "5 Data entries added", "status": "success"}
    answer = seeded.post("/read", json={"Stud_id": {"low": 1000, "high": 8889}}).json()
    assert answer == {"shards_queried": ["sh1", "sh2", "sh3"],
                      "data": [row(2255, 27), row(4095), row(5000)], "status": "success"}

    updated = {"Stud_id": 2255, "Stud_name": "GHI", "Stud_marks": 30}
    assert seeded.put("/update", json={"Stud_id": 2255, "data": updated}).json() == {
        "message": "Data entry for Stud_id: 2255 updated", "status": "success"}
    assert seeded.request("DELETE", "/del", json={"Stud_id": 5000}).json() == {
        "message": "Data entry with Stud_id:5000 removed from all replicas", "status": "success"}
    assert every_row(seeded) == [updated, row(4095), row(9000), row(13000)]
    # Every replica of a shard holds the same rows.
    for shard, expected in {"sh1": [updated, row(4095)], "sh2": []}.items():
        holders = [n for n, shards in SEED_SERVERS.items() if shard in shards]
        for name in holders:
            assert held(db, name, shard, expected, replication) == expected, (name, shard)


@pytest.mark.parametrize("method, path, payload, status, fragment", [
    ("POST", "/write", {"data": [row(1), row(1)]}, 400, "given twice: 1"),
    ("POST", "/write", {"data": [row(1), row(70000)]}, 400, "outside every shard: 70000"),
    ("POST", "/write", {"data": [row(2)]}, 409, "already exist: 2"),
    ("POST", "/write", {"data": [row(3), {"Stud_id": 4, "Stud_name": "x"}]}, 400, "missing Stud_marks"),
    ("POST", "/write", {"data": [{**row(5), "Stud_id": "5"}]}, 400, "must be an integer"),
    ("POST", "/write", {"data": []}, 400, "at least 1 item"),
    ("POST", "/write", {"rows": [row(6)]}, 400, "Field required"),
    ("PUT", "/update", {"Stud_id": 2, "data": row(7)}, 400, "cannot move a row"),
    ("PUT", "/update", {"Stud_id": 8, "data": row(8)}, 404, "No data entry with Stud_id:8"),
    ("PUT", "/update", {"Stud_id": 2, "data": {**row(2), "Stud_marks": "x"}}, 400, "Number"),
    ("DELETE", "/del", {"Stud_id": 9}, 404, "No data entry with Stud_id:9"),
    ("DELETE", "/del", {"Stud_id": 99999}, 404, "outside every shard"),
    ("DELETE", "/del", {"Stud_id": "2"}, 400, "valid integer"),
    ("POST", "/read", {"Stud_id": {"low": 9, "high": 3}}, 400, "low (9) is above high (3)"),
    ("POST", "/read", {"Stud_id": 5}, 400, "Stud_id"),
    ("POST", "/init", {"N": 1}, 400, "Field required"),
])
def test_rejected_requests_write_nothing(shared, method, path, payload, status, fragment):
    _, client = shared
    before = every_row(client)
    assert before == [row(2)]
    message = assert_error(client.request(method, path, json=payload), status)
    assert fragment in message
    assert every_row(client) == before


def test_body_that_is_not_json(shared):
    _, client = shared
    assert_error(client.post("/write", content=b"{oops"), 400, "<Error> Request body is not valid JSON")
    assert_error(client.get("/nowhere"), 404)


def test_add_new_shard_and_servers_with_a_template(seeded, db, replication):
    seeded.post("/write", json={"data": [row(9000), row(9001), row(5000)]})
    response = seeded.post("/add", json={
        "n": 2, "new_shards": [{"Stud_id_low": 16384, "Shard_id": "sh5", "Shard_size": 4096}],
        "servers": {"Server7": ["sh3", "sh5"], "Server[5]": ["sh2", "sh5"]}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["N"] == 8 and body["status"] == "successful"
    servers = seeded.get("/status").json()["servers"]
    templated = [name for name in servers if name not in SEED_SERVERS and name != "Server7"]
    assert len(templated) == 1 and is_dns_label(templated[0])
    number = templated[0].removeprefix("Server")
    assert body["message"] == f"Add Server:7 and Server:{number}"
    # The new servers got copies of the existing shards they hold.
    assert held(db, "Server7", "sh3", [row(9000), row(9001)], replication) == [row(9000),
                                                                              row(9001)]
    assert held(db, templated[0], "sh2", [row(5000)], replication) == [row(5000)]
    assert seeded.post("/write", json={"data": [row(17000)]}).status_code == 200
    assert held(db, "Server7", "sh5", [row(17000)], replication) == [row(17000)]


@pytest.mark.parametrize("payload, message", [
    ({"n": 1, "servers": {"A1": ["sh1"], "B1": ["sh2"]}},
     "<Error> Number of new servers (n) is greater than newly added instances"),
    ({"n": 1, "servers": {"Server0": ["sh1"]}}, None),
    ({"n": 1, "servers": {"A1": ["sh9"]}}, None),
    ({"n": 1, "new_shards": [{"Stud_id_low": 100, "Shard_id": "sh5", "Shard_size": 5}],
      "servers": {"A1": ["sh5"]}}, None),
    ({"n": 1, "new_shards": [{"Stud_id_low": 20000, "Shard_id": "sh5", "Shard_size": 5}],
      "servers": {"A1": ["sh1"]}}, None),
])
def test_bad_add_changes_nothing(shared, payload, message):
    db, client = shared
    assert_error(client.post("/add", json=payload), 400, message)
    assert client.get("/status").json()["servers"] == SEED_SERVERS
    assert set(db.replica_processes()) == set(SEED_SERVERS)


def test_rm_named_and_random(seeded, db):
    response = seeded.request("DELETE", "/rm", json={"n": 2, "servers": ["Server4"]})
    assert response.status_code == 200, response.text
    message = response.json()["message"]
    assert message["N"] == 4 and "Server4" in message["servers"] and len(message["servers"]) == 2
    servers = seeded.get("/status").json()["servers"]
    assert set(servers) == set(SEED_SERVERS) - set(message["servers"])
    for shard in ("sh1", "sh2", "sh3", "sh4"):
        assert any(shard in held for held in servers.values())


@pytest.mark.parametrize("payload, message", [
    ({"n": 1, "servers": ["Server4", "Server1"]},
     "<Error> Length of server list is more than removable instances"),
    ({"n": 1, "servers": ["Server9"]}, None),
    ({"n": 7}, None),
    ({"n": 3, "servers": ["Server0", "Server3", "Server5"]}, None),  # every copy of sh1
])
def test_bad_rm_changes_nothing(shared, payload, message):
    db, client = shared
    assert_error(client.request("DELETE", "/rm", json=payload), 400, message)
    assert client.get("/status").json()["servers"] == SEED_SERVERS
    assert set(db.replica_processes()) == set(SEED_SERVERS)
