"""The contract as OpenAPI 3 (``services/dslab/openapi/``), and schemathesis against the live stacks.

Each balancer serves its document at GET /openapi.json. Schemathesis generates requests from
the documents, valid ones and invalid ones, sends them to a running balancer and checks every
answer: never a 5xx, a status the document lists, JSON, and a body of the documented shape.
Stateful runs chain the calls the documents' responses lead to. Derandomized under CI (the
profile in conftest), so a red CI replays.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import row, seeded_db
from dslab.openapi import document
from dslab.stack import BalancerProcess

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
BALANCER = schemathesis.openapi.from_dict(document("balancer"))
DB = schemathesis.openapi.from_dict(document("db"))
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=list(HealthCheck))


def map_body(ctx, body):
    """Keep a valid /add or /rm to one server: each one starts or stops a process (a shard
    server also an engine), and these tests are about the answers, not about scaling."""
    if isinstance(body, dict) and isinstance(body.get("n"), int) and body["n"] > 1:
        return {**body, "n": 1}
    return body


BALANCER.hook(map_body)
DB.hook(map_body)


@pytest.fixture(scope="module")
def lb_url():
    # 64 slots of K=9: at most 7 replicas, so a valid /add starts a handful of processes.
    balancer = BalancerProcess(args=["-n", "3", "--hash", "blake2b", "--slots", "64"]).start()
    try:
        yield balancer.url
    finally:
        tree = balancer.descendants()
        assert balancer.stop() == 0
        from conftest import assert_all_gone
        assert_all_gone(tree)


@pytest.fixture(scope="module")
def db_url(tmp_path_factory):
    with seeded_db(tmp_path_factory.mktemp("openapi"), [row(i) for i in (5, 4100, 9000)]) as (db, _):
        yield db.url


@pytest.mark.parametrize("name, url", [("balancer", "lb_url"), ("db", "db_url")])
def test_each_balancer_serves_its_document(request, name, url):
    response = httpx.get(f"{request.getfixturevalue(url)}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == document(name)


def check_case(case, url: str) -> None:
    response = case.call(base_url=url, timeout=60)
    case.validate_response(response, checks=CHECKS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_part1_balancer_answers_as_documented(lb_url, mode):
    @SETTINGS
    @given(case=BALANCER.as_strategy(generation_mode=mode))
    def run(case):
        check_case(case, lb_url)
    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_part2_balancer_answers_as_documented(db_url, mode):
    @SETTINGS
    @given(case=DB.as_strategy(generation_mode=mode))
    def run(case):
        check_case(case, db_url)
    run()


def restore_replicas(base_url: str, names: list[str]) -> None:
    """Part 1 back to its starting set of replicas (by count: removed ones come back under new
    names), so each stateful sequence starts from the same state."""
    current = httpx.get(f"{base_url}/rep", timeout=30).json()["message"]["replicas"]
    extra = [n for n in current if n not in names]
    if len(current) > len(names):
        httpx.request("DELETE", f"{base_url}/rm", timeout=60,
                      json={"n": len(current) - len(names), "hostnames": extra[:len(current) - len(names)]})
    elif len(current) < len(names):
        httpx.post(f"{base_url}/add", json={"n": len(names) - len(current)}, timeout=60)


def restore_rows(base_url: str, written: list[int]) -> None:
    """Part 2 back to its seeded rows: what a sequence wrote is deleted again."""
    for stud_id in written:
        httpx.request("DELETE", f"{base_url}/del", json={"Stud_id": stud_id}, timeout=60)
    written.clear()


@pytest.mark.parametrize("schema, url, follows", [
    (BALANCER, "lb_url", ["DELETE /rm"]),  # the links out of /add
    (DB, "db_url", ["POST /read", "PUT /update", "DELETE /del"]),  # the links out of /write
], ids=["part1", "part2"])
def test_stateful_sequences_answer_as_documented(request, schema, url, follows):
    base_url = request.getfixturevalue(url)
    machine = schema.as_state_machine()
    calls: list[str] = []
    written: list[int] = []
    start = httpx.get(f"{base_url}/rep", timeout=30).json()["message"]["replicas"] \
        if schema is BALANCER else []

    class Bound(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case):
            return {"base_url": base_url, "timeout": 60}

        def validate_response(self, response, case, **kwargs):
            calls.append(f"{case.method} {case.path}")
            if case.path == "/write" and response.status_code == 200:
                written.extend(r["Stud_id"] for r in case.body["data"])
            case.validate_response(response, checks=CHECKS)

        def teardown(self):
            # Every sequence starts from the same state: a live server's answers steer the
            # sequences, and hypothesis reports a sequence that draws differently on a
            # second run as flaky.
            if schema is BALANCER:
                restore_replicas(base_url, start)
            else:
                restore_rows(base_url, written)

    Bound.run(settings=settings(max_examples=30, stateful_step_count=6, deadline=None,
                                suppress_health_check=list(HealthCheck)))
    assert set(calls) & set(follows), f"no link was followed to {follows}: {set(calls)}"
