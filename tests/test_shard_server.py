"""The shard server on its own: a real process with its own engine, driven over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pymongo
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SEED_SCHEMA, ShardServer, assert_all_gone, assert_error, row
from dslab.engine import LocalEngine
from dslab.shard.store import LAYOUT
from extremes import EDGE_INTS, as_json, floats, ints, scalars, strings, values


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    with ShardServer(tmp_path_factory.mktemp("shard")) as client:
        configure(client)
        yield client


def configure(client: httpx.Client, shards=("sh1", "sh2")) -> None:
    response = client.post("/config", json={"schema": SEED_SCHEMA, "shards": list(shards)})
    assert response.json() == {"message": ", ".join(f"Server0:{s}" for s in shards) + " configured",
                               "status": "success"}


def test_the_contract_endpoints(tmp_path):
    with ShardServer(tmp_path) as client:
        heartbeat = client.get("/heartbeat")
        assert heartbeat.status_code == 200 and heartbeat.content == b""
        configure(client)
        rows = [row(2255, 27), row(2300), row(2600), row(3000)]
        assert client.post("/write", json={"shard": "sh2", "curr_idx": 507, "data": rows}).json() == {
            "message": "Data entries added", "current_idx": 511, "status": "success"}
        assert client.post("/read", json={"shard": "sh2", "Stud_id": {"low": 2235, "high": 2600}}).json() == {
            "data": rows[:3], "status": "success"}
        assert client.put("/update", json={"shard": "sh2", "Stud_id": 2255,
                                           "data": row(2255, 28)}).json() == {
            "message": "Data entry for Stud_id:2255 updated", "status": "success"}
        assert client.request("DELETE", "/del", json={"shard": "sh2", "Stud_id": 2300}).json() == {
            "message": "Data entry with Stud_id:2300 removed", "status": "success"}
        assert client.request("GET", "/copy", json={"shards": ["sh1", "sh2"]}).json() == {
            "sh1": [], "sh2": [row(2255, 28), row(2600), row(3000)], "status": "success"}


def test_a_retried_write_does_not_duplicate(tmp_path):
    with ShardServer(tmp_path) as client:
        configure(client)
        body = {"shard": "sh1", "curr_idx": 0, "data": [row(1), row(2)]}
        assert client.post("/write", json=body).status_code == 200
        assert client.post("/write", json=body).status_code == 200  # the balancer retried
        copy = client.request("GET", "/copy", json={"shards": ["sh1"]}).json()["sh1"]
        assert copy == [row(1), row(2)]
        assert client.post("/erase", json={"shard": "sh1", "Stud_ids": [1, 7]}).status_code == 200
        assert client.request("GET", "/copy", json={"shards": ["sh1"]}).json()["sh1"] == [row(2)]


def test_insert_stores_new_rows_and_names_the_ones_it_held(tmp_path):
    """Group commit's write: the unique index answers which ids were here; those rows stay as
    they were (a changed row under a stored id is not applied), the new ones are stored."""
    with ShardServer(tmp_path) as client:
        configure(client)
        assert client.post("/write", json={"shard": "sh1", "curr_idx": 0,
                                           "data": [row(1), row(3)]}).status_code == 200
        answer = client.post("/insert", json={"shard": "sh1", "curr_idx": 2,
                                              "data": [row(2), row(3, marks=99), row(1), row(4)]})
        assert answer.status_code == 200 and answer.json()["existing"] == [1, 3]
        copy = client.request("GET", "/copy", json={"shards": ["sh1"]}).json()["sh1"]
        assert copy == [row(1), row(2), row(3), row(4)]
        assert client.post("/insert", json={"shard": "sh1", "curr_idx": 4, "data": [row(5)]}
                           ).json()["existing"] == []


@pytest.mark.parametrize("method, path, body, status, fragment", [
    ("POST", "/write", {"shard": "sh9", "curr_idx": 0, "data": []}, 400, "sh9 is not configured on Server0"),
    ("POST", "/write", {"shard": "sh1", "curr_idx": -1, "data": []}, 400, "curr_idx"),
    ("POST", "/write", {"shard": "sh1", "curr_idx": 0, "data": [{"Stud_id": 1}]}, 400, "missing"),
    ("PUT", "/update", {"shard": "sh1", "Stud_id": 5, "data": row(5)}, 404, "No data entry with Stud_id:5"),
    ("PUT", "/update", {"shard": "sh1", "Stud_id": 5, "data": row(6)}, 400, "cannot move a row"),
    ("DELETE", "/del", {"shard": "sh1", "Stud_id": 5}, 404, "No data entry with Stud_id:5"),
    ("POST", "/read", {"shard": "sh1", "Stud_id": {"low": 5}}, 400, "Field required"),
    ("GET", "/copy", {"shards": []}, 400, "at least 1 item"),
    ("POST", "/config", {"schema": {"columns": ["x"], "dtypes": ["Number"]}, "shards": ["a"]}, 400,
     "needs a Stud_id column"),
])
def test_bad_requests(configured, method, path, body, status, fragment):
    assert fragment in assert_error(configured.request(method, path, json=body), status)
    assert configured.request("GET", "/copy", json={"shards": ["sh1", "sh2"]}).json() == {
        "sh1": [], "sh2": [], "status": "success"}


def test_writes_before_config_are_refused(tmp_path):
    with ShardServer(tmp_path) as client:
        message = assert_error(client.post("/write", json={"shard": "sh1", "curr_idx": 0,
                                                          "data": [row(1)]}), 400)
        assert message == "<Error> Server0 is not configured: POST /config first"


def test_a_restarted_server_finds_its_configuration_and_rows(tmp_path):
    with ShardServer(tmp_path) as client:
        configure(client)
        client.post("/write", json={"shard": "sh1", "curr_idx": 0, "data": [row(1), row(2)]})
    with ShardServer(tmp_path) as client:  # same name, same data root: same engine storage
        assert client.request("GET", "/copy", json={"shards": ["sh1"]}).json()["sh1"] == [row(1), row(2)]
        assert client.post("/write", json={"shard": "sh2", "curr_idx": 0, "data": [row(4100)]}
                           ).status_code == 200


def write_layout_1(data_root, halfway: bool, name: str = "Server0") -> None:
    """What a shard server of layout 1 left: ObjectId _ids, a unique index on Stud_id, and a
    configuration with no layout, written straight into the engine it would have used.
    ``halfway``: as an upgrade killed after its first steps left it (the unique index
    dropped, one row copied under its Stud_id, the old rows still there)."""
    async def write() -> None:
        engine = LocalEngine(data_root / name / "engine")
        client: pymongo.AsyncMongoClient[dict] = pymongo.AsyncMongoClient(await engine.start())
        db = client["studdb"]
        await db["_meta"].insert_one({"_id": "config", "schema": SEED_SCHEMA, "shards": ["sh1"]})
        await db["sh1"].create_index("Stud_id", unique=True)
        await db["sh1"].insert_many([row(1), row(2), row(7)])
        if halfway:
            await db["sh1"].drop_index("Stud_id_1")
            await db["sh1"].insert_one({"_id": 2, **row(2)})
        await client.close()
        engine.stop()
    asyncio.run(write())


@pytest.mark.parametrize("halfway", [False, True], ids=["old layout", "upgrade killed halfway"])
def test_rows_of_the_old_layout_are_kept_and_keyed_by_stud_id(tmp_path, halfway):
    """A server started on data of layout 1 serves every row once and keeps Stud_ids unique,
    also when an earlier upgrade was killed halfway; a second start finds the rows as they
    were."""
    write_layout_1(tmp_path, halfway)
    for _ in range(2):
        with ShardServer(tmp_path) as client:
            copy = client.request("GET", "/copy", json={"shards": ["sh1"]}).json()["sh1"]
            assert copy == [row(1), row(2), row(7)]
            answer = client.post("/insert", json={"shard": "sh1", "curr_idx": 3,
                                                  "data": [row(2), row(3)]}).json()
            assert answer["existing"] == [2]
            assert client.post("/read", json={"shard": "sh1", "Stud_id": {"low": 2, "high": 3}}
                               ).json()["data"] == [row(2), row(3)]
            assert client.post("/erase", json={"shard": "sh1", "Stud_ids": [3]}).status_code == 200
    engine = LocalEngine(tmp_path / "Server0" / "engine")
    with pymongo.MongoClient(asyncio.run(engine.start())) as direct:
        docs = list(direct["studdb"]["sh1"].find())
        assert sorted(d["_id"] for d in docs) == [1, 2, 7]
        assert all(d["_id"] == d["Stud_id"] for d in docs)
        assert direct["studdb"]["_meta"].find_one()["layout"] == LAYOUT
    engine.stop()


def test_sigkill_of_the_server_takes_its_engine_along(tmp_path):
    server = ShardServer(tmp_path)
    with server:
        engine = server.proc.children()[0]
        assert "secantusd" in " ".join(engine.cmdline())
        assert engine.environ()["SERVER_ID"] == "Server0"  # the name is in every process
        os.kill(server.proc.pid, signal.SIGKILL)
        assert_all_gone([engine])


# ---- any input, straight at the shard server (it is reachable on its own) --------------------
shard_ids = st.one_of(st.sampled_from(["sh1", "sh2", "sh9"]), strings)
edge_rows = st.fixed_dictionaries({
    "Stud_id": st.one_of(st.integers(0, 9000), st.sampled_from(EDGE_INTS), scalars),
    "Stud_name": st.one_of(strings, scalars),
    "Stud_marks": st.one_of(st.sampled_from(EDGE_INTS), floats, scalars)})
id_ranges = st.fixed_dictionaries({"low": st.one_of(ints, scalars), "high": st.one_of(ints, scalars)})
SHARD_ENDPOINTS = {
    ("POST", "/write"): st.fixed_dictionaries({"shard": shard_ids, "curr_idx": st.one_of(ints, scalars),
                                               "data": st.one_of(st.lists(edge_rows, max_size=3), values)}),
    ("POST", "/insert"): st.fixed_dictionaries({"shard": shard_ids, "curr_idx": st.one_of(ints, scalars),
                                                "data": st.one_of(st.lists(edge_rows, max_size=3), values)}),
    ("PUT", "/update"): edge_rows.flatmap(lambda r: st.fixed_dictionaries({
        "shard": shard_ids, "Stud_id": st.one_of(st.just(r["Stud_id"]), ints), "data": st.just(r)})),
    ("DELETE", "/del"): st.fixed_dictionaries({"shard": shard_ids, "Stud_id": st.one_of(ints, scalars)}),
    ("POST", "/read"): st.fixed_dictionaries({"shard": shard_ids, "Stud_id": st.one_of(id_ranges, values)}),
    ("GET", "/copy"): st.fixed_dictionaries({"shards": st.one_of(st.lists(shard_ids, max_size=3), values)}),
    ("POST", "/erase"): st.fixed_dictionaries({"shard": shard_ids, "Stud_ids": st.one_of(
        st.lists(st.sampled_from(EDGE_INTS), max_size=3), values)}),
    ("POST", "/config"): st.fixed_dictionaries({}, optional={"schema": values, "shards": values}),
}
shard_requests = st.sampled_from(sorted(SHARD_ENDPOINTS)).flatmap(
    lambda key: st.tuples(st.just(key), st.one_of(SHARD_ENDPOINTS[key], values)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=shard_requests)
def test_no_request_makes_the_shard_server_fail(configured, request):
    (method, path), body = request
    before = configured.request("GET", "/copy", json={"shards": ["sh1", "sh2"]}).json()
    response = configured.request(method, path, content=as_json(body),
                                  headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text[:300]
    if response.status_code != 200:
        assert_error(response, response.status_code)
        assert configured.request("GET", "/copy", json={"shards": ["sh1", "sh2"]}).json() == before
    assert configured.get("/heartbeat").status_code == 200
