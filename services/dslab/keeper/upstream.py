"""A lean HTTP/1.1 client for the proxy's hot path: pooled keep-alive connections to one replica.

Why not Tornado's AsyncHTTPClient: it builds a request object, a header dict, a stream and
a coroutine chain per call and reconnects often; measured here it held the balancer to about a
fifth of HAProxy's throughput. This module keeps idle connections per replica, writes a
pre-formatted request in one ``write`` and lets httptools (llhttp, in C) parse the answer inside
``data_received``: one future per request, no extra task.

Its errors are the small tree in ``errors.py``, so the router can tell "try the next replica"
from anything else without importing this client.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import httptools

from ..common.deadlines import Sweep, sweep_interval
from .errors import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

__all__ = [
    "UpstreamClosed",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "format_get",
    "format_json_request",
]


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    content_type: bytes | None
    body: bytes


def format_get(uri: str, host: str, request_id: str) -> bytes:
    return (
        f"GET {uri} HTTP/1.1\r\nHost: {host}\r\nX-Request-ID: {request_id}\r\n\r\n"
    ).encode("latin-1")


def format_json_request(method: str, uri: str, host: str, body: bytes) -> bytes:
    """A request with a JSON body (any method: the shard servers take one on GET /copy too)."""
    return (
        f"{method} {uri} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    __slots__ = ("_body", "_content_type", "_parser", "_received", "_waiter", "closed", "deadline",
                 "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._content_type: bytes | None = None
        self._body: list[bytes] = []
        self._received = False
        self.closed = False
        self.deadline = 0.0  # a coarse-timeout pool's: when the exchange in flight times out

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"bad response from replica: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(UpstreamClosed("connection closed by replica"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._content_type = None
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 12 and name.lower() == b"content-type":
            self._content_type = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        response = UpstreamResponse(self._parser.get_status_code(), self._content_type,
                                    b"".join(self._body))
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    # used by the pool
    def send(self, raw: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[UpstreamResponse]:
        waiter = loop.create_future()
        self._waiter = waiter
        self._received = False
        if self.transport is None or self.transport.is_closing():
            self.closed = True
            waiter.set_exception(UpstreamClosed("connection closed by replica"))
            return waiter
        try:
            self.transport.write(raw)
        except RuntimeError as exc:  # uvloop: the peer closed it an instant ago
            self.closed = True
            waiter.set_exception(UpstreamClosed(f"connection closed by replica: {exc}"))
        return waiter

    @property
    def received_anything(self) -> bool:
        return self._received

    @property
    def waiter(self) -> asyncio.Future[UpstreamResponse] | None:
        return self._waiter

    def _fail(self, exc: UpstreamError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[UpstreamResponse], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout(f"no response within {timeout:g}s"))


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
        self._closed = False

    async def fetch(self, raw_request: bytes) -> UpstreamResponse:
        """Send one request; a reused connection that the replica had closed is retried once."""
        if self._closed:
            raise UpstreamClosed(f"replica {self.host}:{self.port} left the set")
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            try:
                return await self._exchange(conn, raw_request)
            except UpstreamClosed:
                if conn.received_anything or self._closed:
                    raise
                # The replica closed an idle keep-alive connection: not a failure of the replica.
        return await self._exchange(await self._connect(), raw_request)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, self.host, self.port), self.timeout
            )
        except (TimeoutError, OSError) as exc:
            raise UpstreamConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return conn

    async def _exchange(self, conn: _Connection, raw_request: bytes) -> UpstreamResponse:
        loop = asyncio.get_running_loop()
        waiter = conn.send(raw_request, loop)
        timer = None
        if self.coarse_timeout:
            conn.deadline = loop.time() + self.timeout
            self._sweep.start()
        else:
            timer = loop.call_later(self.timeout, _expire, waiter, self.timeout)
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
        if not conn.closed and not self._closed and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        elif not conn.closed:
            conn.close()
        return response

    def _time_out_due(self, now: float) -> None:
        for conn in self._busy:
            if conn.deadline <= now and conn.waiter is not None:
                _expire(conn.waiter, self.timeout)

    def close(self) -> None:
        """Close every connection; requests in flight fail now (and are retried elsewhere)
        instead of waiting out their timeout on a replica that has left."""
        self._closed = True
        self._sweep.cancel()
        while self._idle:
            self._idle.pop().close()
        for conn in list(self._busy):
            conn.close()
