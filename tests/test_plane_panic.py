"""A panic in one connection's task of the native plane loses that connection only.

The plane reads ``DSLAB_PLANE_TEST_PANIC_PATH`` once at start (a test hook, documented in
``services/native/src/lib.rs``): a GET of that path panics in its connection's task. Tokio
catches the panic; the thread's event loop, its other connections and the connection count
(``max_connections``) must come out of it intact.
"""

from __future__ import annotations

import shutil
import socket

import pytest

from dslab.balancer import native

pytestmark = pytest.mark.skipif(not native.available() and shutil.which("cargo") is None,
                                reason="no Rust toolchain here: the native plane is not built")

GET = b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: %d\r\n\r\n"


def answer(sock: socket.socket) -> bytes:
    """One answer's head and body (framed by its Content-Length); b"" when closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return b""
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_panic_in_a_connection_task_loses_that_connection_only(start_balancer):
    balancer = start_balancer("-n", "1", "--plane", "native", "--workers", "1",
                              "--max-connections", "3", "--idle-timeout", "30",
                              env={"DSLAB_PLANE_TEST_PANIC_PATH": "/boom"})
    address = ("127.0.0.1", balancer.port)
    with socket.create_connection(address, timeout=10) as kept:
        kept.sendall(GET % 1)
        assert answer(kept).startswith(b"HTTP/1.1 200 OK")
        with socket.create_connection(address, timeout=10) as doomed:
            doomed.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer(doomed) == b""  # closed with no answer: its task panicked
        # The same thread goes on: the connection it held before is served...
        kept.sendall(GET % 2)
        assert answer(kept).startswith(b"HTTP/1.1 200 OK")
        # ...and the panicked one's place under max_connections (3) was given back: two
        # more are served beside the kept one, and a fourth is the one refused.
        with socket.create_connection(address, timeout=10) as second, \
                socket.create_connection(address, timeout=10) as third:
            for k, sock in enumerate([second, third]):
                sock.sendall(GET % (3 + k))
                assert answer(sock).startswith(b"HTTP/1.1 200 OK")
            with socket.create_connection(address, timeout=10) as fourth:
                fourth.sendall(GET % 5)
                assert answer(fourth).startswith(b"HTTP/1.1 503 Service Unavailable")
