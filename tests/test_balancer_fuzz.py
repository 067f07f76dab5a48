"""Property-based: random JSON thrown at POST /add and DELETE /rm of a running balancer.

Whatever the body: never a 5xx; a rejection is a 4xx in the contract's error shape and leaves
/rep (and the replica processes) as they were; an acceptance changes N by exactly n, adds or removes the replicas it names, and /rep reads
back what it answered.
"""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_error
from dslab.common.edge import EdgeLimits
from dslab.stack import BalancerProcess
from extremes import EDGE_INTS, as_json, strings

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), strings)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
# n kept small when valid, so that an accepted /add starts few processes.
counts = st.one_of(st.integers(-3, 3), st.integers(min_value=57), st.integers(max_value=-4),
                   st.sampled_from(EDGE_INTS), json_values)
names = st.one_of(st.sampled_from(["Server1", "Server2", "server3", "S5", "S5", "bad name", "-x",
                                   "", "a" * 64, "x_y"]),
                  st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,8}", fullmatch=True),
                  strings, json_scalars)
payloads = st.one_of(
    st.fixed_dictionaries({}, optional={"n": counts, "hostnames": st.one_of(
        st.lists(names, max_size=5), json_values)}),
    st.fixed_dictionaries({"n": counts}, optional={"extra": json_values}),
    json_values,
)
raw_bodies = st.one_of(payloads.map(lambda p: ("json", p)),
                       st.binary(max_size=40).map(lambda b: ("raw", b)))


@pytest.fixture(scope="module")
def fuzz_client():
    balancer = BalancerProcess(args=["-n", "3", "--hash", "blake2b"]).start()
    try:
        with httpx.Client(base_url=balancer.url, timeout=30) as client:
            yield client
    finally:
        balancer.stop()


def replicas(client: httpx.Client) -> list[str]:
    return client.get("/rep").json()["message"]["replicas"]


def send(client: httpx.Client, method: str, path: str, body) -> httpx.Response:
    kind, value = body
    if kind == "json":
        return client.request(method, path, content=as_json(value),
                              headers={"Content-Type": "application/json"})
    return client.request(method, path, content=value)


def check(client: httpx.Client, method: str, path: str, body) -> None:
    before = replicas(client)
    response = send(client, method, path, body)
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        after = response.json()["message"]["replicas"]
        assert replicas(client) == after  # what was answered is what /rep reads back
        n, named = body[1]["n"], body[1].get("hostnames", [])
        if path == "/add":
            assert len(after) == len(before) + n and after[:len(before)] == before
            assert set(named) <= set(after[len(before):])  # the names asked for, added
            client.request("DELETE", "/rm", json={"n": n, "hostnames": after[len(before):]})
        else:
            assert len(after) == len(before) - n and set(after) < set(before)
            assert set(named) <= set(before) and not set(named) & set(after)  # those removed
            client.post("/add", json={"n": n})  # back to three, under new names
        return
    assert 400 <= response.status_code < 500
    payload = response.json()
    assert set(payload) == {"message", "status"} and payload["status"] == "failure"
    assert payload["message"].startswith("<Error> ")
    assert replicas(client) == before


SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(body=raw_bodies)
def test_add_never_fails_badly(fuzz_client, body):
    check(fuzz_client, "POST", "/add", body)


@SETTINGS
@given(body=raw_bodies)
def test_rm_never_fails_badly(fuzz_client, body):
    check(fuzz_client, "DELETE", "/rm", body)


# Request ids: any length, any text a header or a query can carry, are routed to a replica
# (a query that makes the request target longer than the edge allows is refused: 414).
header_ids = st.one_of(st.sampled_from(["0", "132574", "9" * 18, "9" * 19, "7" * 5000, "-1",
                                        "x" * 10_000, "é", "1 2"]),
                       st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                             exclude_characters="\x7f"), min_size=1, max_size=50),
                       ).filter(lambda rid: rid == rid.strip() != "")  # what a header can carry


@SETTINGS
@given(rid=header_ids, in_header=st.booleans())
def test_any_request_id_is_routed(fuzz_client, rid, in_header):
    if in_header:
        response = fuzz_client.get("/home", headers={"X-Request-ID": rid.encode("latin-1")})
    else:
        response = fuzz_client.get("/home", params={"rid": rid})
        target = response.request.url.raw_path
        if len(target) > EdgeLimits().max_request_line:
            assert "Request target over" in assert_error(response, 414)
            return
    assert response.status_code == 200, response.text
    assert response.headers["X-Served-By"] in replicas(fuzz_client)
    again = (fuzz_client.get("/home", headers={"X-Request-ID": rid.encode("latin-1")}) if in_header
             else fuzz_client.get("/home", params={"rid": rid}))
    assert again.headers["X-Served-By"] == response.headers["X-Served-By"]  # sticky
