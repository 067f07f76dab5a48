"""The contract as OpenAPI 3 (``services/dslab/openapi/``), and schemathesis against the live stacks.

Each balancer serves its document at GET /openapi.json. Schemathesis generates requests from
the documents, valid ones and invalid ones, sends them to a running balancer and checks every
answer: never a 5xx, a status the document lists, JSON, and a body of the documented shape.
Stateful runs chain the calls the documents' responses lead to. Derandomized under CI (the
profile in conftest), so a red CI replays.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys

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

from conftest import assert_all_gone, row, seeded_db
from dslab.openapi import document
from dslab.stack import BalancerProcess
from schemathesis_hooks import map_body

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
BALANCER = schemathesis.openapi.from_dict(document("balancer"))
DB = schemathesis.openapi.from_dict(document("db"))
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=list(HealthCheck))


BALANCER.hook(map_body)
DB.hook(map_body)


@contextlib.contextmanager
def small_balancer():
    """Part 1 on 64 slots of K=9: at most 7 replicas, so a valid /add starts few processes."""
    balancer = BalancerProcess(args=["-n", "3", "--hash", "blake2b", "--slots", "64"]).start()
    try:
        yield balancer.url
    finally:
        tree = balancer.descendants()
        assert balancer.stop() == 0
        assert_all_gone(tree)


@contextlib.contextmanager
def seeded(state):
    with seeded_db(state, [row(i) for i in (5, 4100, 9000)]) as (db, _):
        yield db.url


@pytest.fixture(scope="module")
def lb_url():
    with small_balancer() as url:
        yield url


@pytest.fixture(scope="module")
def db_url(tmp_path_factory):
    with seeded(tmp_path_factory.mktemp("openapi")) as url:
        yield url


@pytest.mark.parametrize("name, url", [("balancer", "lb_url"), ("db", "db_url")])
def test_each_balancer_serves_its_document(request, name, url):
    response = httpx.get(f"{request.getfixturevalue(url)}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == document(name)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("schema, url", [(BALANCER, "lb_url"), (DB, "db_url")], ids=["part1", "part2"])
def test_each_balancer_answers_as_documented(request, schema, url, mode):
    base_url = request.getfixturevalue(url)

    @SETTINGS
    @given(case=schema.as_strategy(generation_mode=mode))
    def run(case):
        response = case.call(base_url=base_url, timeout=60)
        case.validate_response(response, checks=CHECKS)
    run()


@pytest.fixture
def fresh_lb_url():
    with small_balancer() as url:
        yield url


@pytest.fixture
def fresh_db_url(tmp_path):
    with seeded(tmp_path) as url:
        yield url


@pytest.mark.parametrize("url, links", [("fresh_lb_url", 2), ("fresh_db_url", 3)],
                         ids=["part1", "part2"])
def test_stateful_sequences_answer_as_documented(request, url, links):
    """Schemathesis' own runner for the stateful phase: it chains calls along the documents'
    links (/add to /rm; /write to /read, /update and /del) against a fresh stack, generating
    deterministically, so the same sequences run every time. Its engine, unlike a bare
    hypothesis state machine, tolerates a server whose state moves on between scenarios."""
    base_url = request.getfixturevalue(url)
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "st"), "run", f"{base_url}/openapi.json",
         "--phases", "stateful", "--checks", ",".join(check.__name__ for check in CHECKS),
         "--max-examples", "100", "--generation-deterministic"],
        capture_output=True, text=True, timeout=600, cwd=os.path.dirname(__file__),
        env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
             "PYTHONPATH": os.path.dirname(__file__)})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(rf"API Links:\s+{links} covered / {links} selected", result.stdout), result.stdout
