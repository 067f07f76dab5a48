"""The lean front end of every service's hot path: an asyncio protocol that parses HTTP with
httptools (llhttp).

Why not ``tornado.httpserver.HTTPServer``: measured here, its pure-Python HTTP/1 connection
(coroutine per request, header objects, IOStream buffers) held Part 1's proxy to about half of
HAProxy's throughput on the same replicas, with the CPU spent on framework work rather than on
the proxying (see the README's benchmark section). So the hot path is: llhttp parses the
request in ``data_received``; the service's ``route`` names a handler for it (Part 1: any GET
that is not an admin path; Part 2 and the shard server: their data endpoints), which returns an
``Answer``; the answer leaves in one ``transport.write``. A handler is a coroutine function (run
as a task), or a ``Direct``: started at once, it answers through a callback, now or when its
I/O calls back, with no task per request (Part 1's proxy: a task and its coroutines were a
fifth of the proxy's CPU per request).

Everything else is still a Tornado ``Application``: such a request is turned into a
``tornado.httputil.HTTPServerRequest`` whose ``connection`` is ``_BufferedConnection``, an
implementation of Tornado's ``HTTPConnection`` interface that collects the handler's response
and hands it back here. Handlers, ``write_error`` and routing are plain Tornado (its handlers
must read ``request.body``: nothing is streamed to them).

A body over ``max_body`` is read and dropped, then answered 413 in the error shape (answering
before it is read would reset the connection under a client still sending it). Requests on one
connection are answered in order (HTTP/1.1 pipelining), one at a time.

The edge (``EdgeLimits``, defaults after nginx and Envoy): a request line over its limit is
answered 414, a header block over its size or count 431, before anything is routed or
forwarded; a client that has begun a request and takes too long to send its headers or its
body gets 408; a connection with no request begun (new, or between keep-alive requests) is
closed silently after the idle timeout; past ``max_connections`` a new connection gets 503.
An HTTP/1.1 request with no Host field, or any with two, is answered 400 (RFC 9112 §3.2), as
is anything llhttp refuses (bare LF line endings, obs-fold, ...): the native plane hands such
requests over here, so this is the one verdict of both planes.
Each of these closes the connection: its answer is written (after the answers to the requests
before it on the connection, in order), the sending side shut, and what the client still
sends read and dropped for a moment (closing at once, with unread data, would reset the
connection and lose the answer).

A client that does not read its answers: once the transport's buffer passes its high-water
mark (``pause_writing``), nothing more is read off the connection nor answered on it, and if it
stays so for the send timeout the connection is dropped (nginx's ``send_timeout``).

The timeouts cost nothing per request: a connection keeps one deadline (a float moved at each
phase of a request) and ``Front`` sweeps its connections (``deadlines.Sweep``) four times per
shortest timeout, at most once a second, so a deadline is acted on at most a quarter of that
timeout late. A timer armed and cancelled at each phase, three per request, was measurable.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import httptools
import tornado.web
from tornado import httputil
from tornado.concurrent import Future

from .deadlines import Sweep, sweep_interval
from .edge import EdgeLimits
from .errors import error_body
from .runtime import bind_socket, raise_fd_limit, serve_forever

__all__ = ["SERVICE_FAILURE", "Answer", "Direct", "EdgeLimits", "Front", "FrontRequest", "Handler",
           "Respond", "Route", "serve", "start_front"]

log = logging.getLogger(__name__)

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_MAX_QUEUED = 32  # pipelined requests buffered per connection before we stop reading
_JSON = b"application/json"
_LINGER = 1.0  # seconds a refused connection's unread input is drained before it is closed


class Answer:
    """What a hot-path handler sends back. ``headers``: more fields, as ``Name: value\\r\\n``
    lines (a proxied answer's end-to-end fields), written after the front end's own."""

    __slots__ = ("body", "content_type", "headers", "served_by", "status")

    def __init__(self, status: int, body: bytes, content_type: bytes | None = _JSON,
                 served_by: str = "", headers: bytes = b"") -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.served_by = served_by
        self.headers = headers


class FrontRequest:
    """A request as parsed; ``uri`` is ``url`` decoded, once its headers are in. ``client``:
    the address of the client that sent it ("" when it is not an IP address)."""

    __slots__ = ("answered", "body", "body_size", "client", "header_bytes", "headers", "hosts",
                 "keep_alive", "method", "request_id", "uri", "url", "version")

    def __init__(self, client: str = "") -> None:
        self.client = client
        self.answered = False
        self.url = b""
        self.uri = ""
        self.method = b""
        self.version = "1.1"
        self.keep_alive = True
        self.request_id: bytes | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.header_bytes = 0
        self.hosts = 0  # Host fields

    def payload(self) -> bytes:
        return b"".join(self.body)


SERVICE_FAILURE = Answer(502, error_body("<Error> Service failure: see its log"))
"""What a handler that failed (a bug) answers; the log says why."""

Handler = Callable[[FrontRequest], Awaitable[Answer]]
Respond = Callable[[FrontRequest, Answer], None]


class Direct:
    """A handler that answers through ``respond(request, answer)``, once, now or later (from an
    I/O callback), instead of as a coroutine: no task per request."""

    __slots__ = ("start",)

    def __init__(self, start: Callable[[FrontRequest, Respond], None]) -> None:
        self.start = start


Route = Callable[[bytes, str], Handler | Direct | None]  # (method, path) -> its handler, or Tornado's


class Front:
    """What a connection needs: ``route`` for the hot path, a Tornado app for the rest."""

    def __init__(self, route: Route, fallback: tornado.web.Application, *,
                 max_body: int, limits: EdgeLimits | None = None) -> None:
        self.route = route
        self.fallback = fallback
        self.max_body = max_body
        self.limits = limits or EdgeLimits()
        self.connections: set[_FrontProtocol] = set()
        self.refused = 0  # connections answered 503 past max_connections
        limits = self.limits
        shortest = min(limits.header_timeout, limits.body_timeout, limits.idle_timeout,
                       limits.send_timeout)
        self._sweep = Sweep(sweep_interval(shortest), self._expire_due,
                            lambda: bool(self.connections))

    def protocol(self) -> _FrontProtocol:
        return _FrontProtocol(self)

    async def adopt(self, sock: socket.socket, preread: bytes,
                    on_close: Callable[[], None] | None = None) -> None:
        """Serve a connection accepted elsewhere (the native data plane hands over what it
        does not proxy itself), ``preread`` being what was read off it already. With
        ``on_close``, it was counted under ``max_connections`` where it was accepted (not
        again here), and ``on_close`` is called once when it closes."""
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: _FrontProtocol(self, preread, on_close),
                                           sock)

    def watch(self, conn: _FrontProtocol) -> None:
        self.connections.add(conn)
        self._sweep.start()

    def _expire_due(self, now: float) -> None:
        for conn in [c for c in self.connections if c.deadline <= now or c.stalled <= now]:
            if conn.stalled <= now:  # its answers have waited on it too long
                conn.abort()
            else:
                conn.expire()


class _FrontProtocol(asyncio.Protocol):
    def __init__(self, front: Front, preread: bytes = b"",
                 on_close: Callable[[], None] | None = None) -> None:
        self._front = front
        self._preread = preread  # read off the connection before it came here
        self._on_close = on_close  # counted elsewhere (the native plane): told when closed
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client = ""  # the peer's address, once connected
        self._current = FrontRequest()
        self._queue: deque[FrontRequest] = deque()
        self._busy = False
        self._paused = False
        self._receiving = False  # a request has begun and is not complete yet
        self._refused = False  # answered with an error and closing: input is dropped
        self._deferred: tuple[int, str] | None = None  # that error, after earlier answers
        self._refusal_sent = False
        self.stalled = math.inf  # when a client not reading its answers is dropped
        self._loop = asyncio.get_running_loop()
        self.deadline = math.inf  # when ``_expiry`` runs (the front's sweep calls ``expire``)
        self._expiry: tuple[Callable[..., None], tuple[Any, ...]] = (self.close, ())
        self._linger: asyncio.TimerHandle | None = None
        self._limits = front.limits

    # ---- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:  # an IP address; IPv6 without its zone, as Rust
            self._client = str(peer[0]).partition("%")[0]  # writes it
        if self._on_close is None and len(self._front.connections) >= self._limits.max_connections:
            self._front.refused += 1
            self._reject(503, f"<Error> Too many connections: this process holds "
                              f"{self._limits.max_connections}, the most it takes")
            return
        self._front.watch(self)
        # Nothing sent yet is idle, not slow: closed without a word when it lasts (a 408 on a
        # connection a pool keeps open would be read as the answer to its next request).
        self._arm(self._limits.idle_timeout, self.close)
        if self._preread:  # before the transport reads anything: the bytes stay in order
            preread, self._preread = self._preread, b""
            self.data_received(preread)

    def connection_lost(self, exc: Exception | None) -> None:
        self._front.connections.discard(self)
        self._disarm()
        self._transport = None
        self._queue.clear()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    def pause_writing(self) -> None:
        """The client reads slower than it is answered: answer and read nothing more until it
        catches up, and drop it if it has not within the send timeout."""
        self.stalled = self._loop.time() + self._limits.send_timeout
        if self._transport is not None and not self._paused:
            self._transport.pause_reading()
            self._paused = True

    def resume_writing(self) -> None:
        self.stalled = math.inf
        if (self._transport is not None and self._paused and not self._refused
                and len(self._queue) <= _MAX_QUEUED // 2):
            self._transport.resume_reading()
            self._paused = False
        self._next()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # drained: the answer is out, the connection closes after the linger
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "<Error> Protocol upgrades are not supported")
        except httptools.HttpParserCallbackError:
            pass  # a callback refused the request (a limit): it answered already
        except httptools.HttpParserError as exc:
            self._reject(400, f"<Error> Malformed HTTP request: {exc}")

    # ---- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._current = FrontRequest(self._client)
        self._receiving = True
        self._arm(self._limits.header_timeout, self._too_slow, "headers")

    def on_url(self, url: bytes) -> None:
        request = self._current
        request.url += url
        if len(request.url) > self._limits.max_request_line:
            self._refuse(414, f"<Error> Request target over {self._limits.max_request_line} "
                              "bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._current
        request.headers.append((name, value))
        request.header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        limits = self._limits
        if len(request.headers) > limits.max_headers:
            self._refuse(431, f"<Error> More than {limits.max_headers} header fields")
        if request.header_bytes > limits.max_header_bytes:
            self._refuse(431, f"<Error> Header fields over {limits.max_header_bytes} bytes")
        if len(name) == 12 and name.lower() == b"x-request-id":
            request.request_id = value
        elif len(name) == 4 and name.lower() == b"host":
            request.hosts += 1

    def on_headers_complete(self) -> None:
        request = self._current
        request.uri = request.url.decode("latin-1")
        request.method = self._parser.get_method()
        request.version = self._parser.get_http_version()
        request.keep_alive = self._parser.should_keep_alive()
        if request.hosts > 1:  # RFC 9112 §3.2: 400, whatever the version
            self._refuse(400, "<Error> Malformed HTTP request: Multiple Host headers")
        if request.hosts == 0 and request.version != "1.0":
            self._refuse(400, "<Error> Malformed HTTP request: Missing Host header")
        self._arm(self._limits.body_timeout, self._too_slow, "body")

    def on_body(self, body: bytes) -> None:
        request = self._current
        request.body_size += len(body)
        if request.body_size <= self._front.max_body:
            request.body.append(body)
        else:  # read and dropped: answered 413 once it is all in
            request.body.clear()

    def on_message_complete(self) -> None:
        self._receiving = False
        self._disarm()  # the client sent it all: nothing of its own to time while it is served
        self._queue.append(self._current)
        if len(self._queue) > _MAX_QUEUED and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True
        self._next()

    # ---- serving ----------------------------------------------------------------------------
    def _serve_next(self) -> None:
        request = self._queue.popleft()
        self._busy = True
        if request.body_size > self._front.max_body:
            self._respond(request, Answer(413, error_body(
                f"<Error> Request body of {request.body_size} bytes is over the limit of "
                f"{self._front.max_body} bytes")))
            return
        handler = self._front.route(request.method, request.uri.partition("?")[0])
        if isinstance(handler, Direct):
            try:
                handler.start(request, self._respond)
            except Exception:
                self._failed(request)
            return
        asyncio.ensure_future(self._serve(request, handler))

    def _respond(self, request: FrontRequest, answer: Answer) -> None:
        if request.answered:
            return  # a Direct handler that answered, then raised: its answer stands
        request.answered = True
        self._write(answer.status, answer.body, answer.content_type, answer.served_by, request,
                    answer.headers)
        self._served()

    def _failed(self, request: FrontRequest) -> None:
        """A bug: the client gets a 502 in the error shape, the log says why."""
        log.exception("serving %r failed", request.url)
        self._respond(request, SERVICE_FAILURE)

    async def _serve(self, request: FrontRequest, handler: Handler | None) -> None:
        try:
            if handler is not None:
                answer = await handler(request)
            else:
                status, headers, body = await _run_tornado(self._front.fallback, request,
                                                           request.uri)
                request.answered = True
                self._write_raw(status, headers, body, request)
                self._served()
                return
        except httputil.HTTPInputError as exc:  # Tornado's refusal (an HTTP/1.1 with no Host)
            self._respond(request, Answer(400, error_body(f"<Error> Malformed HTTP request: "
                                                          f"{exc}")))
            return
        except Exception:
            self._failed(request)
            return
        self._respond(request, answer)

    def _served(self) -> None:
        """The request in service was answered: serve the next one, or wait for it."""
        self._busy = False
        if (self._transport is not None and self._paused and not self._refused
                and self.stalled == math.inf and len(self._queue) <= _MAX_QUEUED // 2):
            self._transport.resume_reading()
            self._paused = False
        self._next()

    def _next(self) -> None:
        """Serve the next request queued, else send the refusal that waited on the requests
        before it, else wait for a request; nothing while one is in service or while the
        client is not reading its answers."""
        if self._transport is None or self._busy or self.stalled < math.inf:
            return
        if self._queue:
            self._serve_next()
        elif self._deferred is not None:
            self._send_refusal(*self._deferred)
        elif not self._receiving and not self._refused:
            self._arm(self._limits.idle_timeout, self.close)

    def _write(self, status: int, body: bytes, content_type: bytes | None, served_by: str,
               request: FrontRequest, headers: bytes = b"") -> None:
        head = [b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n"
                % (status, _REASONS.get(status, b"Unknown"), len(body))]
        if content_type is not None:
            head.append(b"Content-Type: %s\r\n" % content_type)
        if served_by:
            head.append(b"X-Served-By: %s\r\n" % served_by.encode("latin-1"))
        if headers:
            head.append(headers)
        self._finish_write(head, body, request)

    def _write_raw(self, status: int, headers: list[tuple[str, str]], body: bytes,
                   request: FrontRequest) -> None:
        head = [b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n"
                % (status, _REASONS.get(status, b"Unknown"), len(body))]
        head += [f"{k}: {v}\r\n".encode("latin-1") for k, v in headers]
        self._finish_write(head, body, request)

    def _finish_write(self, head: list[bytes], body: bytes, request: FrontRequest) -> None:
        if self._transport is None or self._refusal_sent or self._transport.is_closing():
            return  # closed, or refused at the edge meanwhile: its answer went out already
        if not request.keep_alive:
            head.append(b"Connection: close\r\n")
        elif request.version == "1.0":
            head.append(b"Connection: keep-alive\r\n")
        head.append(b"\r\n")
        head.append(body)
        self._transport.write(b"".join(head))
        if not request.keep_alive:
            self._transport.close()

    # ---- the edge ---------------------------------------------------------------------------
    def _arm(self, seconds: float, then: Callable[..., None], *args: Any) -> None:
        self.deadline = self._loop.time() + seconds
        self._expiry = (then, args)

    def _disarm(self) -> None:
        self.deadline = math.inf

    def expire(self) -> None:
        then, args = self._expiry
        self.deadline = math.inf
        then(*args)

    def _too_slow(self, part: str) -> None:
        """The client did not send a request's ``part`` in time: 408, unless an earlier
        request of this connection is being answered (then the answer would interleave)."""
        seconds = self._limits.header_timeout if part == "headers" else self._limits.body_timeout
        if self._busy:
            self.close()
        else:
            self._reject(408, f"<Error> The request's {part} did not arrive within "
                              f"{seconds:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """From a parser callback: answer, close, and stop the parser (it raises)."""
        self._reject(status, message)
        raise _Refused(message)

    def _reject(self, status: int, message: str) -> None:
        """Answer ``status`` in the error shape and close: the answer goes out (after the
        answers to the requests before it, pipelined), the sending side is shut, and the
        client's input is drained for ``_LINGER`` before the close."""
        if self._transport is None or self._refused:
            return
        self._refused = True  # nothing more is parsed
        self._disarm()
        if self._busy or self._queue:
            self._deferred = (status, message)  # sent by ``_next`` once they are answered
            return
        self._send_refusal(status, message)

    def _send_refusal(self, status: int, message: str) -> None:
        transport = self._transport
        if transport is None or self._refusal_sent:
            return
        self._deferred = None
        self._refusal_sent = True
        self._front.connections.discard(self)
        body = error_body(message)
        transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                        % (status, _REASONS[status], len(body), body))
        if transport.can_write_eof():
            transport.write_eof()
        self._linger = self._loop.call_later(_LINGER, self.close)

    def close(self) -> None:
        self._disarm()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now, what is still to be written to it with it."""
        self.stalled = math.inf
        self.close()
        if self._transport is not None:
            self._transport.abort()


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request that was refused at the edge."""


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


async def _run_tornado(app: tornado.web.Application, request: FrontRequest,
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


async def serve(front: Front, host: str, port: int, ready_fd: int | None, *,
                start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]],
                listening: Callable[[int], None]) -> None:
    """The lifecycle every service shares: ``start`` what it serves from (replicas, a store),
    listen on ``host:port`` with ``front``, tell ``listening`` and the supervisor (``ready_fd``)
    the port; on SIGINT or SIGTERM stop listening, drop the open connections, then ``stop``.
    A start that fails is stopped too, so nothing it began is left running."""
    # Every connection is a descriptor: take what the system allows.
    log.info("open-file limit: %d", raise_fd_limit())
    servers: list[asyncio.Server] = []

    async def start_then_listen() -> int:
        await start()
        sock = bind_socket(host, port)
        servers.append(await start_front(front, sock))
        bound = int(sock.getsockname()[1])
        listening(bound)
        return bound

    async def close_then_stop() -> None:
        for server in servers:
            server.close()
        for conn in list(front.connections):
            conn.close()
        await stop()

    await serve_forever(start_then_listen, close_then_stop, ready_fd)
