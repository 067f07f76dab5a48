"""What crosses the proxy, on both planes alike: a replica is told whom a request is forwarded
for (``X-Forwarded-For``, ``X-Forwarded-Proto``), and a client gets the replica's end-to-end
fields, not its hop-by-hop ones (RFC 9110 §7.6.1).

The replica here is a socket of the test's own, on the port of a replica the balancer started
and the test killed (heartbeats a minute apart: the balancer still routes to it). The test
reads the exact bytes the replica is sent and answers with fields no real replica sends.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator

import pytest

from dslab.balancer import native
from dslab.stack import BalancerProcess

needs_native = pytest.mark.skipif(not native.available() and shutil.which("cargo") is None,
                                  reason="no Rust toolchain here: the native plane is not built")
PLANES = [pytest.param("native", marks=needs_native), "python"]


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
        data += chunk
    return data


def read_to_close(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.fixture(params=PLANES)
def impostor(request, start_balancer) -> Iterator[tuple[BalancerProcess, str, socket.socket]]:
    """A balancer of one replica, and a listening socket in that replica's place."""
    balancer = start_balancer("-n", "1", "--plane", request.param, "--workers", "1",
                              "--heartbeat-interval", "60")
    (name, port), = balancer.replica_ports().items()
    balancer.replica_processes()[name].kill()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.monotonic() + 10
    while True:  # the port is free once the killed replica's socket is closed
        try:
            listener.bind(("127.0.0.1", port))
            break
        except OSError:
            assert time.monotonic() < deadline, "the killed replica's port stayed taken"
            time.sleep(0.05)
    listener.listen()
    listener.settimeout(20)
    with listener:
        yield balancer, name, listener


def through(balancer: BalancerProcess, listener: socket.socket, request: bytes,
            answer: bytes) -> tuple[bytes, bytes]:
    """``request`` sent to the balancer, ``answer`` sent back by the replica (which closes
    the connection after it): what the replica was sent, what the client got."""
    with socket.create_connection(("127.0.0.1", balancer.port), timeout=20) as client:
        client.sendall(request)
        upstream, _ = listener.accept()
        with upstream:
            upstream.settimeout(20)
            seen = read_head(upstream)
            upstream.sendall(answer)
        return seen, read_to_close(client)


OK = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
      b"Connection: close\r\n\r\n{}")


def test_a_replica_is_told_whom_a_request_is_forwarded_for(impostor):
    """The client's own X-Forwarded-For is not passed on (it could name anyone): the
    balancer, the edge, says who connected. A request the native plane hands over (it has a
    body) is forwarded by the Python plane, in the same words."""
    balancer, name, listener = impostor
    for body in (b"", b"hi"):
        length = b"Content-Length: %d\r\n" % len(body) if body else b""
        seen, _ = through(balancer, listener,
                          b"GET /home?x=1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: 7\r\n"
                          b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n" + length
                          + b"Connection: close\r\n\r\n" + body, OK)
        assert seen == (b"GET /home?x=1 HTTP/1.1\r\nHost: %s\r\nX-Request-ID: 7\r\n"
                        b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"
                        % name.encode()), body


def test_end_to_end_fields_come_back_and_hop_by_hop_ones_do_not(impostor):
    """Hop-by-hop: the fixed ones and what Connection names (X-Hop). The proxy's own fields
    (Content-Length, Content-Type, X-Served-By) are its own, first; the replica's follow in
    its order, its Date among them."""
    balancer, name, listener = impostor
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
              b"Connection: close, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n"
              b"Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\n"
              b"X-Served-By: spoof\r\nDate: Mon, 07 Dec 2026 03:00:00 GMT\r\nx-kept: yes\r\n"
              b"Content-Length: 2\r\n\r\n{}")
    _, got = through(balancer, listener,
                     b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 7\r\n"
                     b"Connection: close\r\n\r\n", answer)
    assert got == (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n"
                   b"X-Served-By: %s\r\nCache-Control: no-store\r\n"
                   b"Date: Mon, 07 Dec 2026 03:00:00 GMT\r\nx-kept: yes\r\n"
                   b"Connection: close\r\n\r\n{}" % name.encode())
    # The contract's own rewrite (a 404 is the client's 400) is the proxy's answer: nothing
    # of the replica's answer but its status comes back.
    _, got = through(balancer, listener,
                     b"GET /nope HTTP/1.1\r\nHost: x\r\nX-Request-ID: 7\r\n"
                     b"Connection: close\r\n\r\n", answer.replace(b"200 OK", b"404 Not Found"))
    assert got.startswith(b"HTTP/1.1 400 Bad Request\r\nContent-Length: ")
    assert b"Cache-Control" not in got and b"x-kept" not in got
