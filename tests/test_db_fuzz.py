"""Property-based: random bodies at every Part 2 endpoint of a running, seeded database.

Never a 5xx; a rejection is a 4xx in the contract's error shape, and the stored rows are
exactly as before it.
"""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import row, seeded_db

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 20000), st.integers(),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8)
ids = st.one_of(st.integers(-3, 17000), values)
rows = st.one_of(
    st.fixed_dictionaries({}, optional={"Stud_id": ids, "Stud_name": scalars,
                                        "Stud_marks": scalars, "extra": scalars}),
    values)
id_ranges = st.one_of(st.fixed_dictionaries({}, optional={"low": ids, "high": ids}), values)
bad_counts = st.one_of(st.just(0), st.integers(max_value=-1), st.integers(min_value=101), values)

ENDPOINTS = {
    ("POST", "/write"): st.fixed_dictionaries({}, optional={"data": st.one_of(
        st.lists(rows, max_size=4), values)}),
    ("PUT", "/update"): st.fixed_dictionaries({}, optional={"Stud_id": ids, "data": rows}),
    ("DELETE", "/del"): st.fixed_dictionaries({}, optional={"Stud_id": ids}),
    ("POST", "/read"): st.fixed_dictionaries({}, optional={"Stud_id": id_ranges}),
    ("POST", "/init"): st.fixed_dictionaries({}, optional={"N": values, "schema": values,
                                                           "shards": values, "servers": values}),
    ("POST", "/add"): st.fixed_dictionaries({"n": bad_counts}, optional={
        "new_shards": values, "servers": values}),
    ("DELETE", "/rm"): st.fixed_dictionaries({"n": bad_counts}, optional={"servers": values}),
}
requests = st.sampled_from(sorted(ENDPOINTS)).flatmap(
    lambda key: st.tuples(st.just(key), st.one_of(ENDPOINTS[key], values,
                                                  st.binary(max_size=30))))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    with seeded_db(tmp_path_factory.mktemp("fuzz"), [row(i) for i in (5, 4100, 9000, 16000)]) as (_, client):
        yield client


def snapshot(client: httpx.Client) -> tuple[list[dict], dict]:
    rows = client.post("/read", json={"Stud_id": {"low": -(1 << 40), "high": 1 << 40}}).json()["data"]
    return rows, client.get("/status").json()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests)
def test_no_request_breaks_the_database(seeded, request):
    (method, path), body = request
    before = snapshot(seeded)
    if isinstance(body, bytes):
        response = seeded.request(method, path, content=body)
    else:
        response = seeded.request(method, path, json=body)
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert path in ("/write", "/update", "/del", "/read")
        return
    payload = response.json()
    assert set(payload) == {"message", "status"} and payload["status"] == "failure"
    assert payload["message"].startswith("<Error> ")
    assert snapshot(seeded) == before
