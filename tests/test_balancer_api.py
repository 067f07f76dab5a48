"""The Part 1 HTTP contract, against a running balancer with real replica processes."""

from __future__ import annotations

import json
import socket
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import assert_error
from dslab.stack import wait_until
from dslab.supervisor import is_dns_label


def replicas(client: httpx.Client) -> list[str]:
    response = client.get("/rep")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "successful"
    assert body["message"]["N"] == len(body["message"]["replicas"])
    return body["message"]["replicas"]


def test_rep_lists_the_default_replicas(client):
    assert client.get("/rep").json() == {
        "message": {"N": 3, "replicas": ["Server1", "Server2", "Server3"]},
        "status": "successful",
    }


def test_home_is_answered_by_the_replica_the_ring_picks(client, balancer):
    running = balancer.replica_processes()
    assert set(running) == {"Server1", "Server2", "Server3"}
    response = client.get("/home", headers={"X-Request-ID": "132574"})
    assert response.status_code == 200
    served_by = response.headers["X-Served-By"]
    assert response.json() == {"message": f"Hello from Server: {served_by}",
                               "status": "successful"}
    # The same id always lands on the same replica, by header or by query parameter.
    for _ in range(5):
        assert client.get("/home", headers={"X-Request-ID": "132574"}).headers["X-Served-By"] == served_by
        assert client.get("/home?rid=132574").headers["X-Served-By"] == served_by


def test_random_ids_spread_over_every_replica(client):
    served = Counter(client.get("/home").headers["X-Served-By"] for _ in range(300))
    assert set(served) == {"Server1", "Server2", "Server3"}


def test_heartbeat_is_passed_through(client):
    response = client.get("/heartbeat")
    assert response.status_code == 200 and response.content == b""


def test_unknown_path_is_the_contracts_400(client):
    assert_error(client.get("/other"), 400,
                 "<Error> '/other' endpoint does not exist in server replicas")
    assert_error(client.get("/a/b?rid=5"), 400,
                 "<Error> '/a/b' endpoint does not exist in server replicas")


def test_add_with_names_starts_real_replicas(client, balancer):
    response = client.post("/add", json={"n": 4, "hostnames": ["S5", "S4", "S10", "S11"]})
    assert response.status_code == 200
    assert response.json() == {
        "message": {"N": 7, "replicas": ["Server1", "Server2", "Server3", "S5", "S4", "S10", "S11"]},
        "status": "successful",
    }
    assert set(balancer.replica_processes()) == set(replicas(client))
    served = {client.get("/home").headers["X-Served-By"] for _ in range(400)}
    assert {"S5", "S4", "S10", "S11"} & served


def test_add_fills_missing_names_with_random_dns_labels(client, balancer):
    body = client.post("/add", json={"n": 3, "hostnames": ["S5"]}).json()["message"]
    assert body["N"] == 6
    new = body["replicas"][3:]
    assert new[0] == "S5" and len(set(new)) == 3
    assert all(is_dns_label(name) for name in new)
    assert set(balancer.replica_processes()) == set(body["replicas"])


def test_rm_removes_the_named_and_random_others(client, balancer):
    client.post("/add", json={"n": 2, "hostnames": ["S5", "S4"]})
    response = client.request("DELETE", "/rm", json={"n": 3, "hostnames": ["S5", "S4"]})
    assert response.status_code == 200
    left = response.json()["message"]
    assert left["N"] == 2 and "S5" not in left["replicas"] and "S4" not in left["replicas"]
    assert set(left["replicas"]) < {"Server1", "Server2", "Server3"}
    wait_until(lambda: set(balancer.replica_processes()) == set(left["replicas"]), 10,
               what="removed replica processes to exit")


def test_the_two_exact_length_errors(client):
    assert_error(client.post("/add", json={"n": 2, "hostnames": ["S5", "S4", "S10", "S11"]}), 400,
                 "<Error> Length of hostname list is more than newly added instances")
    assert_error(client.request("DELETE", "/rm", json={"n": 2, "hostnames": ["S5", "S4", "S10", "S11"]}),
                 400, "<Error> Length of hostname list is more than removable instances")
    assert replicas(client) == ["Server1", "Server2", "Server3"]


@pytest.mark.parametrize("method, path, payload, fragment", [
    ("POST", "/add", {"n": 1, "hostnames": ["Server2"]}, "already exist: Server2"),
    ("POST", "/add", {"n": 1, "hostnames": ["server2"]}, "already exist: server2"),
    ("DELETE", "/rm", {"n": 1, "hostnames": ["S99"]}, "do not exist: S99"),
    ("DELETE", "/rm", {"n": 4}, "Cannot remove 4 replica(s): only 3 exist"),
    ("DELETE", "/rm", {"n": 3}, "Cannot remove 3 replica(s): at least one must stay"),
    ("POST", "/add", {"n": 60}, "K=9 holds at most 56 servers and 3 are there"),
    ("POST", "/add", {"n": 10**12}, "Cannot add 1000000000000 replica(s)"),
    ("POST", "/add", {"n": 1, "hostnames": ["bad_name"]}, "'bad_name' is not a valid hostname"),
    ("POST", "/add", {"n": "1"}, "n: Input should be a valid integer"),
])
def test_rejected_requests_change_nothing(client, balancer, method, path, payload, fragment):
    before = set(balancer.replica_processes())
    response = client.request(method, path, json=payload)
    assert_error(response, 400)
    assert fragment in response.json()["message"]
    assert replicas(client) == ["Server1", "Server2", "Server3"]
    assert set(balancer.replica_processes()) == before


def test_body_that_is_not_json_is_a_400(client):
    assert_error(client.post("/add", content=b"{n: 2"), 400, "<Error> Request body is not valid JSON")
    assert_error(client.request("DELETE", "/rm", content=b""), 400)


def test_wrong_methods_are_405_in_the_error_shape(client):
    assert_error(client.post("/home"), 405)
    assert_error(client.get("/add"), 405, "<Error> Method GET is not allowed on '/add'")
    assert_error(client.put("/rep"), 405)


def test_concurrent_add_and_rm_are_serialized(client, balancer):
    def add(k):
        return client.post("/add", json={"n": 1, "hostnames": [f"C{k}"]}).status_code

    def rm(_):
        return client.request("DELETE", "/rm", json={"n": 1}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda f_k: f_k[0](f_k[1]),
                              [(add, k) for k in range(5)] + [(rm, k) for k in range(3)]))
    assert codes == [200] * 8
    names = replicas(client)
    assert len(names) == 3 + 5 - 3
    wait_until(lambda: set(balancer.replica_processes()) == set(names), 10,
               what="processes to match /rep")


def test_pipelined_requests_are_answered_in_order(balancer):
    with socket.create_connection(("127.0.0.1", balancer.port), timeout=10) as sock:
        sock.sendall(b"GET /rep HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 1\r\n\r\n"
                     b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in data.split(b"HTTP/1.1 ")[1:]]
    statuses = [int(part[:3]) for part in data.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [200, 200, 400]
    assert json.loads(bodies[0])["message"]["N"] == 3
    assert b"Hello from Server" in bodies[1]


def test_malformed_http_gets_a_400_and_the_connection_closes(balancer):
    with socket.create_connection(("127.0.0.1", balancer.port), timeout=10) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b'"status": "failure"' in data
