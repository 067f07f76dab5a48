"""A lean HTTP/1.1 client for the proxy's hot path: pooled keep-alive connections to one replica.

Why not Tornado's AsyncHTTPClient: it builds a request object, a header dict, a stream and
a coroutine chain per call and reconnects often; measured here it held the balancer to about a
fifth of HAProxy's throughput. This module keeps idle connections per replica, writes a
pre-formatted request in one ``write`` and lets httptools (llhttp, in C) parse the answer inside
``data_received``: one future per request, no extra task. ``UpstreamPool.send`` goes further
for the proxy's hot path: on an idle connection it calls back when the answer is parsed, with
no future and no task at all.

A replica answers with the same status line and fields again and again (its Date changes once a
second). A connection keeps what llhttp read off a head it parsed whole in one read, with the
answer's length; a read that is the same head and a body of that length is that answer again,
taken without parsing it (no callback per field): the same bytes make the same answer.

Its errors are the small tree in ``errors.py``, so the router can tell "try the next replica"
from anything else without importing this client.
"""

from __future__ import annotations

import asyncio
import errno
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools

from ..common.deadlines import Sweep, sweep_interval
from .errors import (
    OutOfDescriptors,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

__all__ = [
    "OutOfDescriptors",
    "UpstreamClosed",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "Done",
    "format_get",
    "format_json_request",
]


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    content_type: bytes | None
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # all, in order
    # The status line and fields as read, when the connection keeps them (else b""): the same
    # object for the same head on one connection, a key for what is derived from the fields.
    # ``headers`` is then shared by the answers with that head: read it, do not change it.
    head: bytes = b""


Done = Callable[[UpstreamResponse | None, UpstreamError | OutOfDescriptors | None], None]
"""Called once when an exchange ends: ``(response, None)`` or ``(None, error)``."""


def format_get(uri: str, host: str, request_id: str, client: str | None = None) -> bytes:
    """``client``: the address of the client a request is forwarded for (None: the request is
    the balancer's own, a heartbeat). A forwarded one says who asked and how, as a reverse
    proxy does (``X-Forwarded-For``, left out when the address is unknown, and
    ``X-Forwarded-Proto``); the client's own such fields are not passed on."""
    if client:  # one string formatted, on the hot path
        return (f"GET {uri} HTTP/1.1\r\nHost: {host}\r\nX-Request-ID: {request_id}\r\n"
                f"X-Forwarded-For: {client}\r\nX-Forwarded-Proto: http\r\n\r\n"
                ).encode("latin-1")
    forwarded = "" if client is None else "X-Forwarded-Proto: http\r\n"
    return (f"GET {uri} HTTP/1.1\r\nHost: {host}\r\nX-Request-ID: {request_id}\r\n"
            f"{forwarded}\r\n").encode("latin-1")


def format_json_request(method: str, uri: str, host: str, body: bytes) -> bytes:
    """A request with a JSON body (any method: the shard servers take one on GET /copy too)."""
    return (
        f"{method} {uri} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1") + body


_Known = tuple[bytes, int, bytes | None, list[tuple[bytes, bytes]], int, bool]
"""A head a connection parsed whole in one read: the head (status line and fields, as a key),
status, Content-Type, fields, the size of the read (head, blank line and body), keep-alive."""
_KNOWN_KEPT = 4  # heads a connection keeps (a replica's Date moves on once a second)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time, ended through a future
    (``send``) or a callback (``start``)."""

    __slots__ = ("_began", "_body", "_content_type", "_headers", "_keep_alive", "_known",
                 "_on_done", "_parser", "_reading", "_received", "_status", "_waiter", "closed",
                 "deadline", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._on_done: Done | None = None
        self._content_type: bytes | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._received = False
        self._reading = False  # the parser is inside an answer (begun, its final one not done)
        self._began = 0  # answers begun in the read being parsed
        self._status = 0  # the last final answer's, as llhttp read it
        self._keep_alive = True
        self._known: dict[bytes, _Known] = {}
        self.closed = False
        self.deadline = 0.0  # a coarse-timeout pool's: when the exchange in flight times out

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._received = True
        end = -1
        if not self._reading:  # an answer begins here
            end = data.find(b"\r\n\r\n")
            if end > 0:
                known = self._known.get(data[:end])
                if known is not None and len(data) == known[4]:  # that answer again, whole
                    head, status, content_type, headers, _, keep_alive = known
                    response = UpstreamResponse(status, content_type, data[end + 4:], headers,
                                                head)
                    if not keep_alive:
                        self.close()
                    try:
                        self._end(response, None)
                    except Exception:  # as a callback raising under the parser: closed
                        self.close()
                    return
        self._began = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"bad response from replica: {exc}"))
            self.close()
        except httptools.HttpParserUpgrade:  # no request of ours asks for one
            self._fail(UpstreamProtocolError("bad response from replica: 101 to a request "
                                             "with no Upgrade"))
            self.close()
        else:
            if end > 0 and self._began == 1 and not self._reading:  # one answer, ended
                self._keep_head(data, end)

    def _keep_head(self, data: bytes, end: int) -> None:
        """The read began with an answer and held no other: if its body is the rest of the
        read, the answer was framed by its length and ends the read, and its head (``end``:
        where the blank line is) is kept with what llhttp read off it."""
        body = b"".join(self._body)
        if len(data) != end + 4 + len(body):
            return  # framed otherwise (chunked), or more came after it
        known = self._known
        if len(known) >= _KNOWN_KEPT:
            known.clear()
        head = data[:end]
        known[head] = (head, self._status, self._content_type, self._headers, len(data),
                       self._keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(UpstreamClosed("connection closed by replica"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._content_type = None
        self._headers = []
        self._body = []
        self._reading = True
        self._began += 1

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if len(name) == 12 and name.lower() == b"content-type":
            self._content_type = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the final one follows
        self._reading = False
        self._status = status
        self._keep_alive = keep_alive = self._parser.should_keep_alive()
        response = UpstreamResponse(status, self._content_type, b"".join(self._body),
                                    self._headers)
        if not keep_alive:
            self.close()
        self._end(response, None)

    def _end(self, response: UpstreamResponse | None,
             error: UpstreamError | OutOfDescriptors | None) -> None:
        waiter, self._waiter = self._waiter, None
        on_done, self._on_done = self._on_done, None
        if waiter is not None:
            if waiter.done():
                return
            if error is None:
                waiter.set_result(response)  # type: ignore[arg-type]
            else:
                waiter.set_exception(error)
        elif on_done is not None:
            on_done(response, error)

    # used by the pool
    def send(self, raw: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[UpstreamResponse]:
        waiter = loop.create_future()
        if self._write(raw):
            self._waiter = waiter
        else:
            waiter.set_exception(UpstreamClosed("connection closed by replica"))
        return waiter

    def start(self, raw: bytes, on_done: Done) -> bool:
        """``send`` with a callback instead of a future; False (nothing sent, ``on_done`` never
        called) when the connection is closed already."""
        if not self._write(raw):
            return False
        self._on_done = on_done
        return True

    def _write(self, raw: bytes) -> bool:
        """Write a request; False when the connection turned out to be closed."""
        self._received = False
        if self.transport is None or self.transport.is_closing():
            self.closed = True
            return False
        try:
            self.transport.write(raw)
        except RuntimeError:  # uvloop: the peer closed it an instant ago
            self.closed = True
            return False
        return True

    @property
    def received_anything(self) -> bool:
        return self._received

    @property
    def in_flight(self) -> bool:
        return self._waiter is not None or self._on_done is not None

    def _fail(self, exc: UpstreamError) -> None:
        self._end(None, exc)

    def time_out(self, timeout: float) -> None:
        self._fail(UpstreamTimeout(f"no response within {timeout:g}s"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Keep-alive connections to one replica at ``host:port``.

    ``coarse_timeout``: rather than a timer armed and cancelled per request (measurable on the
    proxy's hot path), each exchange sets its connection's deadline and the pool sweeps its
    busy connections every quarter timeout (at most every second): a request times out at most
    that much late. Heartbeats keep the exact timer: their timeout is what finds a hung
    replica."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0, max_idle: int = 256,
                 coarse_timeout: bool = False) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_idle = max_idle
        self.coarse_timeout = coarse_timeout
        self._sweep = Sweep(sweep_interval(timeout), self._time_out_due,
                            lambda: bool(self._busy) and not self._closed)
        self._idle: deque[_Connection] = deque()
        self._busy: set[_Connection] = set()
        self._connecting: set[asyncio.Task[tuple[asyncio.Transport, _Connection]]] = set()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None  # ``send``'s: Python 3.11's
        # get_running_loop() makes a getpid() system call each time

    async def fetch(self, raw_request: bytes) -> UpstreamResponse:
        """Send one request; a reused connection that the replica had closed is retried once."""
        if self._closed:
            raise self._left()
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            try:
                return await self._exchange(conn, raw_request)
            except UpstreamClosed as exc:
                if not self._closed_while_idle(conn, exc):
                    raise
        return await self._exchange(await self._connect(), raw_request)

    def _closed_while_idle(self, conn: _Connection,
                           error: UpstreamError | OutOfDescriptors) -> bool:
        """The replica closed a kept connection as a request went out on it (nothing came
        back): not a failure of the replica, worth one try on a new connection."""
        return (isinstance(error, UpstreamClosed) and not conn.received_anything
                and not self._closed)

    async def _connect(self) -> _Connection:
        """A new connection. The attempt is one the pool can cancel: a replica that leaves while
        its connect hangs (a node gone, its SYNs unanswered) fails the request now, not after
        the request timeout."""
        loop = asyncio.get_running_loop()
        attempt = asyncio.ensure_future(asyncio.wait_for(
            loop.create_connection(_Connection, self.host, self.port), self.timeout))
        self._connecting.add(attempt)
        try:
            _, conn = await attempt
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                raise self._left() from None  # the pool closed, the caller did not cancel
            raise
        except (TimeoutError, OSError) as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise OutOfDescriptors(f"no descriptor to connect to {self.host}:{self.port}: "
                                       f"{exc}") from exc
            raise UpstreamConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        finally:
            self._connecting.discard(attempt)
        if self._closed:  # connected just as the replica left
            conn.close()
            raise self._left()
        return conn

    def _left(self) -> UpstreamClosed:
        return UpstreamClosed(f"replica {self.host}:{self.port} left the set")

    async def _exchange(self, conn: _Connection, raw_request: bytes) -> UpstreamResponse:
        loop = asyncio.get_running_loop()
        waiter = conn.send(raw_request, loop)
        timer = None
        if self.coarse_timeout:
            conn.deadline = loop.time() + self.timeout
            self._sweep.start()
        else:
            timer = loop.call_later(self.timeout, conn.time_out, self.timeout)
        self._busy.add(conn)
        try:
            response = await waiter
        except BaseException:
            conn.close()  # a half-read or cancelled exchange leaves the connection unusable
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._busy.discard(conn)
        self._keep(conn)
        return response

    def send(self, raw_request: bytes, on_done: Done) -> bool:
        """The proxy's hot path: ``raw_request`` on an idle connection, ``on_done`` called when
        the answer is in (or the exchange failed), with no future or task in between. Returns
        False, having sent nothing, when no idle connection is at hand or the pool keeps exact
        timers: the caller then uses ``fetch``, which connects (and retries a keep-alive
        connection the replica had closed)."""
        if self._closed or not self.coarse_timeout:
            return False
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                continue

            def ended(response: UpstreamResponse | None,
                      error: UpstreamError | OutOfDescriptors | None,
                      conn: _Connection = conn) -> None:
                self._busy.discard(conn)
                if error is None:
                    self._keep(conn)
                    on_done(response, None)
                    return
                conn.close()  # a half-read exchange leaves the connection unusable
                if self._closed_while_idle(conn, error):
                    self._fetch_then(raw_request, on_done)
                else:
                    on_done(None, error)

            if conn.start(raw_request, ended):
                loop = self._loop
                if loop is None:
                    loop = self._loop = asyncio.get_running_loop()
                conn.deadline = loop.time() + self.timeout
                self._sweep.start()
                self._busy.add(conn)
                return True
        return False

    def _fetch_then(self, raw_request: bytes, on_done: Done) -> None:
        def delivered(task: asyncio.Task[UpstreamResponse]) -> None:
            error = UpstreamClosed("exchange cancelled") if task.cancelled() else task.exception()
            if error is None:
                on_done(task.result(), None)
            elif isinstance(error, (UpstreamError, OutOfDescriptors)):
                on_done(None, error)
            else:  # a bug, or the loop going down: say so as a failure of this exchange
                on_done(None, UpstreamClosed(f"exchange failed: {error!r}"))
        asyncio.ensure_future(self.fetch(raw_request)).add_done_callback(delivered)

    def _keep(self, conn: _Connection) -> None:
        """An exchange ended well: the connection goes back to the idle ones, if it may."""
        if not conn.closed and not self._closed and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        elif not conn.closed:
            conn.close()

    def _time_out_due(self, now: float) -> None:
        for conn in list(self._busy):
            if conn.deadline <= now and conn.in_flight:
                conn.time_out(self.timeout)

    def close(self) -> None:
        """Close every connection; requests in flight fail now (and are retried elsewhere)
        instead of waiting out their timeout on a replica that has left."""
        self._closed = True
        self._sweep.cancel()
        while self._idle:
            self._idle.pop().close()
        for conn in list(self._busy):
            conn.close()
        for attempt in list(self._connecting):
            attempt.cancel()
