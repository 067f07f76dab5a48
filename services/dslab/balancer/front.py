"""The balancer's listening side: an asyncio protocol that parses HTTP with httptools (llhttp).

Why not ``tornado.httpserver.HTTPServer``: measured here, its pure-Python HTTP/1 connection
(coroutine per request, header objects, IOStream buffers) held the proxy to about half of
HAProxy's throughput on the same replicas, with the CPU spent on framework work rather than on
the proxying (see the README's benchmark section). So the hot path is: llhttp parses the
request in ``data_received``, one task asks the ring and a pooled keep-alive upstream, and the
answer leaves in one ``transport.write``.

The admin endpoints are still a Tornado ``Application``: a request for them is turned into a
``tornado.httputil.HTTPServerRequest`` whose ``connection`` is ``_BufferedConnection``, an
implementation of Tornado's ``HTTPConnection`` interface that collects the handler's response
and hands it back here. Handlers, ``write_error`` and routing are plain Tornado.

Requests on one connection are answered in order (HTTP/1.1 pipelining), one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import httptools
import tornado.web
from tornado import httputil
from tornado.concurrent import Future

from ..common.errors import error_body
from .admin import ADMIN_PATHS
from .proxy import Proxy, request_id_from

__all__ = ["Front", "start_front"]

log = logging.getLogger(__name__)

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_MAX_QUEUED = 32  # pipelined requests buffered per connection before we stop reading
_MAX_BODY = 1 << 20


class Front:
    """What a connection needs: the proxy for GETs, the Tornado app for everything else."""

    def __init__(self, proxy: Proxy, admin: tornado.web.Application,
                 rng: random.Random | None = None) -> None:
        self.proxy = proxy
        self.admin = admin
        self.rng = rng or random.Random()
        self.connections: set[_FrontProtocol] = set()

    def protocol(self) -> _FrontProtocol:
        return _FrontProtocol(self)


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "request_id", "url", "version")

    def __init__(self) -> None:
        self.url = b""
        self.method = b""
        self.version = "1.1"
        self.keep_alive = True
        self.request_id: bytes | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []


class _FrontProtocol(asyncio.Protocol):
    def __init__(self, front: Front) -> None:
        self._front = front
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._current = _Request()
        self._body_size = 0
        self._too_large = False
        self._queue: deque[_Request] = deque()
        self._busy = False
        self._paused = False

    # ---- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._front.connections.discard(self)
        self._transport = None
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "<Error> Protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if self._too_large:
                self._reject(413, f"<Error> Request body is over the limit of {_MAX_BODY} bytes")
            else:
                self._reject(400, f"<Error> Malformed HTTP request: {exc}")

    # ---- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._current = _Request()
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._current
        request.headers.append((name, value))
        if len(name) == 12 and name.lower() == b"x-request-id":
            request.request_id = value

    def on_headers_complete(self) -> None:
        request = self._current
        request.method = self._parser.get_method()
        request.version = self._parser.get_http_version()
        request.keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > _MAX_BODY:
            self._too_large = True
            raise httptools.HttpParserError("request body over 1 MiB")
        self._current.body.append(body)

    def on_message_complete(self) -> None:
        self._queue.append(self._current)
        if len(self._queue) > _MAX_QUEUED and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True
        if not self._busy:
            self._serve_next()

    # ---- serving ----------------------------------------------------------------------------
    def _serve_next(self) -> None:
        request = self._queue.popleft()
        self._busy = True
        asyncio.ensure_future(self._serve(request))

    async def _serve(self, request: _Request) -> None:
        try:
            uri = request.url.decode("latin-1")
            if request.method == b"GET" and uri.partition("?")[0] not in ADMIN_PATHS:
                rid = request_id_from(request.request_id, uri, self._front.rng)
                answer = await self._front.proxy.answer(uri, rid)
                self._write(answer.status, answer.body, answer.content_type,
                            answer.served_by, request)
            else:
                status, headers, body = await _run_tornado(self._front.admin, request, uri)
                self._write_raw(status, headers, body, request)
        except Exception:
            log.exception("serving %r failed", request.url)
            self._write(502, error_body("<Error> Balancer failure: see its log"), b"application/json",
                        "", request)
        self._busy = False
        if self._transport is None:
            return
        if self._paused and len(self._queue) <= _MAX_QUEUED // 2:
            self._transport.resume_reading()
            self._paused = False
        if self._queue:
            self._serve_next()

    def _write(self, status: int, body: bytes, content_type: bytes | None, served_by: str,
               request: _Request) -> None:
        head = [b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n"
                % (status, _REASONS.get(status, b"Unknown"), len(body))]
        if content_type is not None:
            head.append(b"Content-Type: %s\r\n" % content_type)
        if served_by:
            head.append(b"X-Served-By: %s\r\n" % served_by.encode("latin-1"))
        self._finish_write(head, body, request)

    def _write_raw(self, status: int, headers: list[tuple[str, str]], body: bytes,
                   request: _Request) -> None:
        head = [b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n"
                % (status, _REASONS.get(status, b"Unknown"), len(body))]
        head += [f"{k}: {v}\r\n".encode("latin-1") for k, v in headers]
        self._finish_write(head, body, request)

    def _finish_write(self, head: list[bytes], body: bytes, request: _Request) -> None:
        if self._transport is None:
            return
        if not request.keep_alive:
            head.append(b"Connection: close\r\n")
        elif request.version == "1.0":
            head.append(b"Connection: keep-alive\r\n")
        head.append(b"\r\n")
        head.append(body)
        self._transport.write(b"".join(head))
        if not request.keep_alive:
            self._transport.close()

    def _reject(self, status: int, message: str) -> None:
        if self._transport is None:
            return
        body = error_body(message)
        self._transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                              % (status, _REASONS[status], len(body), body))
        self._transport.close()
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


# ---- Tornado's HTTPConnection interface, buffered ---------------------------------------------
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class _Context:
    def __init__(self, remote_ip: str | None) -> None:
        self.remote_ip = remote_ip
        self.protocol = "http"


class _BufferedConnection(httputil.HTTPConnection):
    """Collects what a Tornado ``RequestHandler`` writes; resolves ``done`` on ``finish``."""

    def __init__(self) -> None:
        self.context = _Context("127.0.0.1")
        self.done: asyncio.Future[tuple[int, list[tuple[str, str]], bytes]] = (
            asyncio.get_running_loop().create_future())
        self._status = 200
        self._headers: list[tuple[str, str]] = []
        self._chunks: list[bytes] = []

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        pass  # the client connection outlives the request; nothing to report

    def write_headers(self, start_line: Any, headers: httputil.HTTPHeaders,
                      chunk: bytes | None = None) -> Future[None]:
        self._status = start_line.code
        self._headers = [(k, v) for k, v in headers.get_all() if k.lower() not in _HOP_BY_HOP]
        return self.write(chunk or b"")

    def write(self, chunk: bytes) -> Future[None]:
        if chunk:
            self._chunks.append(chunk)
        written: Future[None] = Future()
        written.set_result(None)
        return written

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result((self._status, self._headers, b"".join(self._chunks)))


async def _run_tornado(app: tornado.web.Application, request: _Request,
                       uri: str) -> tuple[int, list[tuple[str, str]], bytes]:
    connection = _BufferedConnection()
    headers = httputil.HTTPHeaders()
    for name, value in request.headers:
        headers.add(name.decode("latin-1"), value.decode("latin-1"))
    start_line = httputil.RequestStartLine(request.method.decode("latin-1"), uri,
                                           f"HTTP/{request.version}")
    tornado_request = httputil.HTTPServerRequest(
        headers=headers, body=b"".join(request.body), connection=connection,
        start_line=start_line)
    app(tornado_request)  # Application's HTTPServerRequest interface: routes, runs the handler
    return await connection.done


async def start_front(front: Front, sock: Any) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(front.protocol, sock=sock)
