"""Out of descriptors is the proxy's own condition, never a replica's, on either plane: a
request it accepted but cannot open a connection to a replica for (EMFILE) is answered 503,
and no replica is counted as failed or suspected, nor another one tried. The limit is
squeezed on the running balancer (``prlimit``) to leave it exactly the descriptors the test
means it to have."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dslab.balancer import native

needs_native = pytest.mark.skipif(not native.available() and shutil.which("cargo") is None,
                                  reason="no Rust toolchain here: the native plane is not built")


def metrics(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0) + sample.value
    return out


def answer_of(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head and body of the answer on ``sock``, which the balancer closes after it."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def settled_descriptors(pid: int, polls: int = 6, every: float = 0.05) -> list[int]:
    """The process's open descriptors once the same ``polls`` times in a row (the connections
    of the requests before, handed over and closed by the front end, close a moment later)."""
    deadline = time.monotonic() + 10
    seen: list[list[int]] = []
    while len(seen) < polls or any(fds != seen[-1] for fds in seen[-polls:]):
        assert time.monotonic() < deadline, "the balancer's descriptors never settled"
        seen.append(sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")))
        time.sleep(every)
    return seen[-1]


@pytest.mark.parametrize("plane", [pytest.param("native", marks=needs_native), "python"])
def test_a_connect_that_finds_no_descriptor_answers_503_and_suspects_no_one(start_balancer,
                                                                             plane):
    # Heartbeats a minute apart: the keeper opens nothing while the limit is squeezed. Two
    # replicas: a plane that took EMFILE for the owner's failure would try the other one.
    balancer = start_balancer("-n", "2", "--plane", plane, "--workers", "1",
                              "--heartbeat-interval", "60")
    before = metrics(balancer.url)
    replicas = httpx.get(f"{balancer.url}/rep", timeout=10).json()
    fds = settled_descriptors(balancer.pid)
    limit = len(fds) + 1  # one descriptor free: the accepted connection's; none to connect
    if max(fds) >= limit:
        pytest.skip("the balancer's descriptors have gaps: cannot leave exactly one free")
    saved = resource.prlimit(balancer.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(balancer.pid, resource.RLIMIT_NOFILE, (limit, saved[1]))
    try:
        with socket.create_connection(("127.0.0.1", balancer.port), timeout=10) as sock:
            sock.sendall(b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 1\r\n"
                         b"Connection: close\r\n\r\n")
            head, body = answer_of(sock)
    finally:
        resource.prlimit(balancer.pid, resource.RLIMIT_NOFILE, saved)
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 503 Service Unavailable"
    assert body == b'{"message": "<Error> No replica is available", "status": "failure"}'
    # The accept backs off after a refusal for want of descriptors: served again soon.
    deadline = time.monotonic() + 5
    while True:
        try:
            after = metrics(balancer.url)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline
    assert after.get("dslab_plane_descriptors_exhausted_total", 0) >= 1
    # One 503, and no replica counted as failed, tried after the owner, or suspected.
    for name in ("dslab_upstream_failures_total", "dslab_retries_total"):
        assert after.get(name, 0) == before.get(name, 0), name
    assert after["dslab_unavailable_total"] == before.get("dslab_unavailable_total", 0) + 1
    assert httpx.get(f"{balancer.url}/rep", timeout=10).json() == replicas
    answer = httpx.get(f"{balancer.url}/home", headers={"X-Request-ID": "1"}, timeout=10)
    assert answer.status_code == 200
