"""The front end's ``Direct`` handlers (answered by callback, no task), on a real socket.

Part 1's proxy answers from its pool's parser callback; these check what the front end
promises such a handler: answers leave in request order even when they come back out of order,
a handler that raises gets the client a 502 in the error shape and the connection goes on, and
a second answer to one request is dropped.
"""

from __future__ import annotations

import asyncio
import json
import socket

import tornado.web

from dslab.common.edge import EdgeLimits
from dslab.common.front import Answer, Direct, Front, FrontRequest, Respond, start_front
from dslab.common.runtime import bind_socket


def later(request: FrontRequest, respond: Respond) -> None:
    asyncio.get_running_loop().call_later(0.05, respond, request, Answer(200, b"later", None))


def now(request: FrontRequest, respond: Respond) -> None:
    respond(request, Answer(200, b"now", None))


def raises(request: FrontRequest, respond: Respond) -> None:
    raise RuntimeError("a bug in a handler")


def twice(request: FrontRequest, respond: Respond) -> None:
    respond(request, Answer(200, b"first", None))
    respond(request, Answer(200, b"second", None))


ROUTES = {f"/{h.__name__}": Direct(h) for h in (later, now, raises, twice)}


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return status, await reader.readexactly(length)


def exchange(paths: list[str]) -> list[tuple[int, bytes]]:
    """The paths sent pipelined in one write on one connection; the answers, in order."""
    async def main() -> list[tuple[int, bytes]]:
        front = Front(lambda method, path: ROUTES.get(path), tornado.web.Application(),
                      max_body=1024)
        sock = bind_socket("127.0.0.1", 0)
        server = await start_front(front, sock)
        try:
            reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            writer.write(b"".join(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % p.encode()
                                  for p in paths))
            answers = [await asyncio.wait_for(read_answer(reader), 5) for _ in paths]
            writer.close()
            return answers
        finally:
            server.close()
    return asyncio.run(main())


def test_answers_leave_in_request_order_though_they_come_back_out_of_order():
    assert exchange(["/later", "/now", "/later"]) == [(200, b"later"), (200, b"now"),
                                                      (200, b"later")]


def test_a_handler_that_raises_gets_a_502_and_the_connection_goes_on():
    (status, body), after = exchange(["/raises", "/now"])
    assert status == 502 and json.loads(body) == {
        "message": "<Error> Service failure: see its log", "status": "failure"}
    assert after == (200, b"now")


def test_a_second_answer_to_one_request_is_dropped():
    assert exchange(["/twice", "/now"]) == [(200, b"first"), (200, b"now")]


def test_a_request_refused_at_the_edge_is_answered_after_the_ones_before_it():
    """Pipelined: an answer still on its way (``/later``), then a request with no Host (400,
    RFC 9112 §3.2): the 400 leaves after the earlier answer, not before it."""
    async def main() -> bytes:
        front = Front(lambda method, path: ROUTES.get(path), tornado.web.Application(),
                      max_body=1024)
        sock = bind_socket("127.0.0.1", 0)
        server = await start_front(front, sock)
        try:
            reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            writer.write(b"GET /later HTTP/1.1\r\nHost: t\r\n\r\nGET /now HTTP/1.1\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), 5)  # until the server closes
            writer.close()
            return data
        finally:
            server.close()
    data = asyncio.run(main())
    first, _, rest = data.partition(b"later")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Missing Host header" in rest


def test_a_client_that_does_not_read_its_answers_is_dropped_after_the_send_timeout():
    """Answers pile up unread (pipelined GETs, nothing read): the front end stops reading
    and serving, and drops the connection once they have waited the send timeout."""
    limits = EdgeLimits(send_timeout=0.3)

    def big(request: FrontRequest, respond: Respond) -> None:
        respond(request, Answer(200, b"x" * 65536, None))

    async def main() -> tuple[bool, float]:
        front = Front(lambda method, path: Direct(big), tornado.web.Application(),
                      max_body=1024, limits=limits)
        sock = bind_socket("127.0.0.1", 0)
        server = await start_front(front, sock)
        try:
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(client, sock.getsockname()[:2])
            await asyncio.wait_for(loop.sock_sendall(
                client, b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n" * 200), 5)
            while not front.connections:  # accepted (within the wait_for below)
                await asyncio.sleep(0.01)
            started = loop.time()
            deadline = started + limits.send_timeout + 5  # a sweep or two late at most
            while loop.time() < deadline:
                if not front.connections:  # dropped
                    return True, loop.time() - started
                await asyncio.sleep(0.05)
            return False, loop.time() - started
        finally:
            client.close()
            server.close()
    dropped, waited = asyncio.run(main())
    assert dropped and waited >= limits.send_timeout * 0.9
