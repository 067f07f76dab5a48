"""The admin token, both ways, on every endpoint that changes membership or configuration of
both balancers: without it (or with a wrong one) 401 in the error shape and nothing changes;
with it, served; data endpoints stay open; off by default; read from a file too; never logged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from conftest import assert_error, free_port, row, seed_init
from dslab.common.auth import authorized
from dslab.stack import wait_until

TOKEN = "s3cret-7f0c"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
BAD = [{}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN},
       {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}]


def test_authorized_wants_the_bearer_scheme_and_the_exact_token():
    assert authorized(f"Bearer {TOKEN}", TOKEN) and authorized(f"bearer {TOKEN}", TOKEN)
    for header in (None, "", TOKEN, f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN[:-1]}",
                   f"Bearer {TOKEN}0"):
        assert not authorized(header, TOKEN), header


def refused_then_served(client: httpx.Client, method: str, path: str, body: dict,
                        unchanged: str) -> httpx.Response:
    """Every bad header: 401 with WWW-Authenticate, and ``unchanged`` (GET) reads the same;
    then the good one is served."""
    before = client.get(unchanged).json()
    for headers in BAD:
        response = client.request(method, path, json=body, headers=headers)
        assert "needs the admin token" in assert_error(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in response.text
        assert client.get(unchanged).json() == before
    return client.request(method, path, json=body, headers=GOOD)


def test_part1_add_and_rm_need_the_token_and_the_data_path_does_not(start_balancer):
    lb = start_balancer("-n", "2", "--admin-token", TOKEN)
    with httpx.Client(base_url=lb.url, timeout=30) as client:
        assert client.get("/home").status_code == 200 and client.get("/rep").status_code == 200
        added = refused_then_served(client, "POST", "/add", {"n": 1, "hostnames": ["S9"]}, "/rep")
        assert added.status_code == 200 and "S9" in added.json()["message"]["replicas"]
        removed = refused_then_served(client, "DELETE", "/rm", {"n": 1, "hostnames": ["S9"]}, "/rep")
        assert removed.status_code == 200 and "S9" not in removed.json()["message"]["replicas"]


def test_part1_without_a_token_is_open_as_the_contract_is(start_balancer):
    lb = start_balancer("-n", "1")
    with httpx.Client(base_url=lb.url, timeout=30) as client:
        assert client.post("/add", json={"n": 1}).status_code == 200


def test_part2_init_add_rm_need_the_token_read_from_a_file(start_db, tmp_path):
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")  # as a mounted secret often ends
    db = start_db("--admin-token-file", str(secret))
    with httpx.Client(base_url=db.url, timeout=60) as client:
        assert refused_then_served(client, "POST", "/init", seed_init(), "/status").status_code == 200
        assert client.post("/write", json={"data": [row(1)]}).status_code == 200  # data: open
        assert client.post("/read", json={"Stud_id": {"low": 0, "high": 9}}).json()["data"] == [row(1)]
        body = {"n": 1, "new_shards": [], "servers": {"Server9": ["sh1"]}}
        assert refused_then_served(client, "POST", "/add", body, "/status").status_code == 200
        body = {"n": 1, "servers": ["Server9"]}
        assert refused_then_served(client, "DELETE", "/rm", body, "/status").status_code == 200


@pytest.mark.parametrize("module", ["dslab.balancer", "dslab.db"])
def test_an_unreadable_or_empty_token_file_stops_the_start(module, tmp_path):
    for path in (tmp_path / "missing", tmp_path / "empty"):
        if path.name == "empty":
            path.write_text("\n")
        done = subprocess.run([sys.executable, "-m", module, "--admin-token-file", str(path)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "--admin-token-file" in done.stderr, done.stderr


def test_the_token_is_never_logged(tmp_path):
    """A balancer at DEBUG, asked with wrong and right tokens: its log never holds the token."""
    port = free_port()
    log = tmp_path / "balancer.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dslab.balancer", "--host", "127.0.0.1",
                                 "--port", str(port), "-n", "1", "--log-level", "DEBUG"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "ADMIN_TOKEN": TOKEN})
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/rep", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 60, what="the balancer to listen")
        for headers in [*BAD, GOOD]:
            httpx.post(f"{url}/add", json={"n": 1}, headers=headers, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    text = log.read_text()
    assert "401" in text or "/add" in text  # the requests were logged ...
    assert TOKEN not in text  # ... the token was not
