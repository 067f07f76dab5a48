"""The fields of a replica's answer that neither plane passes on to the client: the Python
plane's ``proxy._NOT_PASSED`` and the native plane's ``http::NOT_PASSED`` (services/native),
two lists kept by hand that must name the same fields.

Checked by what reaches a client: a replica (the test's socket, as in test_plane_forwarding)
answers with one field of every name on either list, each written in lower case with a value
of its own, so a line of the replica's that the proxy passed on is told from the proxy's own
(``Content-Length``, ``Content-Type``, ``X-Served-By``, written in its case). The names sent
are those of both lists (the Rust one read from its source): a name on one list only is
dropped by one plane and passed by the other, and fails on each. The same again on a
connection to the replica kept alive: the answers after the first (which the Python plane takes
from what it read off the first one's head, without parsing them) come back as the first did.

One name is not sent: ``transfer-encoding``. The native plane takes only answers framed by
their length (it refuses any other, as a failed try), so on that plane the field never gets
as far as being passed or dropped; that the two lists agree on it is checked on their text.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

from test_plane_forwarding import impostor, read_to_close, through  # noqa: F401 - a fixture

from dslab.balancer.proxy import _NOT_PASSED

NATIVE_SOURCE = Path(__file__).resolve().parents[1] / "services" / "native" / "src" / "http.rs"
NOT_FRAMED_BY_LENGTH = b"transfer-encoding"


def native_not_passed() -> frozenset[bytes]:
    """The names in the native plane's ``const NOT_PASSED: [&str; N] = [...]``."""
    found = re.search(r"const NOT_PASSED: \[&str; (\d+)\] = \[(.*?)\];",
                      NATIVE_SOURCE.read_text(), re.DOTALL)
    assert found, f"no NOT_PASSED list in {NATIVE_SOURCE}"
    names = re.findall(r'"([^"]*)"', found[2])
    assert len(names) == int(found[1])
    return frozenset(name.encode() for name in names)


# A value per name: what the proxy would have to pass on, were the field end-to-end. The
# framing ones say what the answer is (its body is "{}"); Connection names nothing more.
FRAMING = {b"content-length": b"2", b"content-type": b"application/json"}
GET = b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 7\r\nConnection: close\r\n\r\n"


def answer_with(names: set[bytes], connection: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """A replica's 200 with a field of each name, and one end-to-end field to be passed on
    (``x-end-to-end``); the fields sent, by name."""
    framing = {**FRAMING, b"connection": connection}
    fields = {name: framing.get(name, b"hop-" + name) for name in sorted(names)}
    fields[b"x-end-to-end"] = b"kept"
    head = b"".join(b"%s: %s\r\n" % field for field in fields.items())
    return b"HTTP/1.1 200 OK\r\n" + head + b"\r\n{}", fields


def sent_and_expected(connection: bytes) -> tuple[bytes, dict[bytes, bytes], set[bytes]]:
    """The answer (every name on either list but ``transfer-encoding``), its fields, and the
    names dropped on their way to the client, as both lists say (which must agree)."""
    python, native = set(_NOT_PASSED), set(native_not_passed())
    assert NOT_FRAMED_BY_LENGTH in python and NOT_FRAMED_BY_LENGTH in native
    answer, fields = answer_with((python | native) - {NOT_FRAMED_BY_LENGTH}, connection)
    assert python == native, "the planes' lists differ"
    return answer, fields, python - {NOT_FRAMED_BY_LENGTH}


def passed_on(got: bytes, fields: dict[bytes, bytes], name: str) -> set[bytes]:
    """The names of the replica's fields that reached the client, in its answer ``got``."""
    head, _, body = got.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    assert status == b"HTTP/1.1 200 OK" and body == b"{}", got
    # The proxy's own fields, in its case, are there all the same.
    assert b"X-Served-By: " + name.encode() in lines and b"Content-Length: 2" in lines
    return {field for field, value in fields.items() if b"%s: %s" % (field, value) in lines}


def test_both_planes_drop_the_same_fields_of_a_replica_answer(impostor):  # noqa: F811
    balancer, name, listener = impostor
    python, native = set(_NOT_PASSED), set(native_not_passed())
    answer, fields = answer_with((python | native) - {NOT_FRAMED_BY_LENGTH}, b"close")
    _, got = through(balancer, listener, GET, answer)
    dropped = set(fields) - passed_on(got, fields, name)
    assert dropped == python - {NOT_FRAMED_BY_LENGTH}, "the Python plane's list"
    assert dropped == native - {NOT_FRAMED_BY_LENGTH}, "the native plane's list"
    assert set(fields) - dropped == {b"x-end-to-end"}


class KeptReplica:
    """The replica's place, answering every request on a connection with ``answer`` and
    keeping the connection open, on threads of its own, until ``stop``."""

    def __init__(self, listener: socket.socket, answer: bytes) -> None:
        self.listener, self.answer = listener, answer
        self.accepted = self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
                while b"\r\n\r\n" in data:
                    _, _, data = data.partition(b"\r\n\r\n")
                    conn.sendall(self.answer)  # in one write: read in one, as a replica's
                    self.answered += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_answers_on_a_kept_connection_after_its_first_drop_the_same_fields(impostor):  # noqa: F811
    """A replica's connection kept alive: the answers after the first, the same bytes again,
    come back as the first (the Python plane takes them from the first one's head)."""
    balancer, name, listener = impostor
    answer, fields, dropped = sent_and_expected(b"keep-alive")
    replica = KeptReplica(listener, answer)
    try:
        got = []
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", balancer.port), timeout=20) as client:
                client.sendall(GET)
                got.append(read_to_close(client))
    finally:
        replica.stop()
    assert replica.answered == 4 and replica.accepted < 4, "no connection was kept"
    assert got == [got[0]] * 4
    assert set(fields) - passed_on(got[0], fields, name) == dropped
