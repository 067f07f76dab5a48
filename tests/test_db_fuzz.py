"""Property-based: random and extreme bodies at every Part 2 endpoint of a running, seeded
database, and requests at the size limits.

Never a 5xx; a rejection is a 4xx in the contract's error shape, and the stored rows and
/status are exactly as before it; an acceptance stored exactly what was sent and nothing else
(read back); no shard server is ever evicted or replaced (the same processes serve from first
to last).
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_error, row, seeded_db
from extremes import EDGE_INTS, INT64_MAX, as_json, floats, scalars, strings, values

ids = st.one_of(st.integers(-3, 17000), st.sampled_from(EDGE_INTS), values)
# Rows of the right shape, in a shard, with one extreme value: what reaches the engine.
edge_rows = st.fixed_dictionaries({
    "Stud_id": st.one_of(st.integers(0, 16383), st.sampled_from(EDGE_INTS)),
    "Stud_name": st.one_of(strings, scalars),
    "Stud_marks": st.one_of(st.sampled_from(EDGE_INTS), floats, scalars)})
rows = st.one_of(
    edge_rows,
    st.fixed_dictionaries({"Stud_id": ids, "Stud_name": scalars, "Stud_marks": scalars}),
    st.fixed_dictionaries({}, optional={"Stud_id": ids, "Stud_name": scalars,
                                        "Stud_marks": scalars, "extra": scalars}),
    values)
shard_specs = st.fixed_dictionaries({"Stud_id_low": ids, "Shard_id": strings,
                                     "Shard_size": ids})
id_ranges = st.one_of(st.fixed_dictionaries({}, optional={"low": ids, "high": ids}), values)
bad_counts = st.one_of(st.just(0), st.integers(max_value=-1), st.integers(min_value=101), values)

ENDPOINTS = {
    ("POST", "/write"): st.one_of(
        st.fixed_dictionaries({"data": st.lists(edge_rows, min_size=1, max_size=3)}),
        st.fixed_dictionaries({}, optional={"data": st.one_of(st.lists(rows, max_size=4), values)})),
    ("PUT", "/update"): st.one_of(
        edge_rows.map(lambda r: {"Stud_id": r["Stud_id"], "data": r}),
        st.fixed_dictionaries({}, optional={"Stud_id": ids, "data": rows})),
    ("DELETE", "/del"): st.fixed_dictionaries({}, optional={"Stud_id": ids}),
    ("POST", "/read"): st.fixed_dictionaries({}, optional={"Stud_id": id_ranges}),
    ("POST", "/init"): st.fixed_dictionaries({}, optional={"N": values, "schema": values,
                                                           "shards": values, "servers": values}),
    ("POST", "/add"): st.fixed_dictionaries({"n": bad_counts}, optional={
        "new_shards": st.one_of(st.lists(shard_specs, max_size=2), values), "servers": values}),
    ("DELETE", "/rm"): st.fixed_dictionaries({"n": bad_counts}, optional={"servers": values}),
}
requests = st.sampled_from(sorted(ENDPOINTS)).flatmap(
    lambda key: st.tuples(st.just(key), st.one_of(ENDPOINTS[key], values,
                                                  st.binary(max_size=30))))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with seeded_db(tmp_path_factory.mktemp("fuzz"), [row(i) for i in (5, 4100, 9000, 16000)]) as (db, client):
        servers = {name: p.pid for name, p in db.replica_processes().items()}
        yield db, client
        assert {name: p.pid for name, p in db.replica_processes().items()} == servers


def snapshot(client: httpx.Client) -> tuple[list[dict], dict]:
    rows = client.post("/read", json={"Stud_id": {"low": -(1 << 40), "high": 1 << 40}}).json()["data"]
    return rows, client.get("/status").json()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests)
def test_no_request_breaks_the_database(stack, request):
    db, seeded = stack
    (method, path), body = request
    before = snapshot(seeded)
    servers = {name: p.pid for name, p in db.replica_processes().items()}
    if isinstance(body, bytes):
        response = seeded.request(method, path, content=body)
    else:
        response = seeded.request(method, path, content=as_json(body),
                                  headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text
    # No replica was taken down for what a request carried (an evicted one is stopped at once).
    assert {name: p.pid for name, p in db.replica_processes().items()} == servers
    if response.status_code == 200:
        assert path in ("/write", "/update", "/del", "/read")
        assert_stored_as_answered(path, body, before[0], snapshot(seeded)[0], response.json())
        return
    payload = response.json()
    assert set(payload) == {"message", "status"} and payload["status"] == "failure"
    assert payload["message"].startswith("<Error> ")
    assert snapshot(seeded) == before


def by_id(rows: list[dict]) -> dict:
    keyed = {r["Stud_id"]: r for r in rows}
    assert len(keyed) == len(rows), "a Stud_id stored twice"
    return keyed


def assert_stored_as_answered(path: str, body, before: list[dict], after: list[dict],
                              answer: dict) -> None:
    """What a 200 did is exactly what was asked: the rows sent stored as sent (every value, to
    the bit), the row updated or deleted, nothing else touched; a read changes nothing and
    returns exactly the stored rows in its range."""
    expected = by_id(before)
    if path == "/write":
        for sent in body["data"]:
            assert sent["Stud_id"] not in expected, "a 200 for a row already stored"
            expected[sent["Stud_id"]] = sent
    elif path == "/update":
        expected.pop(body["Stud_id"])
        expected[body["data"]["Stud_id"]] = body["data"]
    elif path == "/del":
        expected.pop(body["Stud_id"])
    else:
        low, high = body["Stud_id"]["low"], body["Stud_id"]["high"]
        in_range = {k: r for k, r in expected.items() if low <= k <= high}
        assert by_id(answer["data"]) == in_range
    assert by_id(after) == expected
    # Bit for bit: a float keeps its sign and value, a string its every code point.
    assert json.dumps(sorted(after, key=lambda r: r["Stud_id"]), sort_keys=True) == \
        json.dumps(sorted(expected.values(), key=lambda r: r["Stud_id"]), sort_keys=True)


ALL = {"Stud_id": {"low": 0, "high": INT64_MAX}}


FREE_IDS = [k for k in range(1000, 16384) if k not in (4100, 9000, 16000)]


@pytest.mark.parametrize("rows, status, fragment", [
    ([row(k) for k in range(20_000, 30_000)], 400, "outside every shard"),  # refused whole
    ([row(k) for k in FREE_IDS[:10_000]], 200, None),
    ([row(k) for k in FREE_IDS[:10_001]], 400, "at most 10000"),
], ids=["10000-outside", "10000", "10001"])
def test_ten_thousand_rows_are_served_and_more_are_refused(stack, rows, status, fragment):
    _, client = stack
    before = client.post("/read", json=ALL).json()["data"]
    response = client.post("/write", json={"data": rows})
    assert response.status_code == status, response.text[:300]
    after = client.post("/read", json=ALL).json()["data"]
    if status == 200:
        assert by_id(after) == {**by_id(before), **by_id(rows)}
    else:
        assert fragment in assert_error(response, status)
        assert after == before


def test_bodies_at_and_over_the_size_limit(stack):
    _, client = stack
    big_name = "n" * (1 << 20)  # a 1 MiB row is stored and read back whole
    assert client.post("/write", json={"data": [{"Stud_id": 77, "Stud_name": big_name,
                                                 "Stud_marks": 1}]}).status_code == 200
    back = client.post("/read", json={"Stud_id": {"low": 77, "high": 77}}).json()["data"]
    assert back == [{"Stud_id": 77, "Stud_name": big_name, "Stud_marks": 1}]
    before = client.post("/read", json=ALL).json()["data"]
    over = {"data": [{"Stud_id": 78, "Stud_name": "n" * (9 << 20), "Stud_marks": 1}]}
    assert_error(client.post("/write", json=over), 413)
    assert_error(client.put("/update", json={"Stud_id": 77, "data": over["data"][0]}), 413)
    assert client.post("/read", json=ALL).json()["data"] == before
