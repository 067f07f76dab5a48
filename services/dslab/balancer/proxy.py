"""GET /<path>: the replica the ring picks answers; the next one on the ring if it fails.

Transport-free: ``Proxy.answer`` takes the URI and the request id and returns what to send
back, so the front end (``common/front.py``) only parses and writes bytes. ``Proxy.route`` is
the front end's routing: every GET that is not an admin path is proxied.

The common case runs with no task and no coroutine (``_start``, a ``Direct`` handler): the
owner's pool sends the request on an idle keep-alive connection and calls back with the
answer, which goes straight to the client. Everything else takes ``answer``, a coroutine that
connects, fails over along the ring and applies bounded loads: the first request to a replica,
a failed owner (its failure is counted and reported first), and ``--balance-factor``.

What a replica is sent and what comes back: the request says whom it is forwarded for
(``format_get``); the answer keeps the replica's end-to-end fields, in its order, after the
proxy's own (``end_to_end``). A connect that finds no descriptor left is this process's
condition: 503, and no replica is suspected or tried next (as in the native plane).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from ..common.errors import error_body
from ..common.front import SERVICE_FAILURE, Answer, Direct, FrontRequest, Handler, Respond
from ..common.metrics import metrics_handler
from ..keeper.bounded import Loads, bounded_walk
from ..keeper.errors import OutOfDescriptors, UpstreamError
from ..keeper.routing import NoReplicaAvailable, route
from ..keeper.upstream import UpstreamPool, UpstreamResponse, format_get
from ..ring import EmptyRingError, HashRing, request_number
from .admin import ADMIN_PATHS
from .metrics import ProxyMetrics

__all__ = ["Proxy", "Upstreams", "end_to_end", "exhausted_counter", "request_id_from"]


class Upstreams(Protocol):
    """What the proxy routes over: the primary's ``ReplicaSet``, or a worker's copy of it."""

    ring: HashRing

    async def fetch(self, name: str, raw_request: bytes) -> UpstreamResponse: ...

    def pool(self, name: str) -> UpstreamPool | None: ...

    def suspect(self, name: str, exc: Exception | None = None) -> None: ...

log = logging.getLogger(__name__)

# Fields a replica's answer does not pass on: the hop-by-hop ones (RFC 9110 §7.6.1), and
# those the front end writes itself. The native plane's ``http::NOT_PASSED``.
_NOT_PASSED = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding",
    b"upgrade", b"trailer", b"proxy-authenticate", b"proxy-authorization",
    b"content-length", b"content-type", b"x-served-by"})
_UNAVAILABLE = error_body("<Error> No replica is available")


def end_to_end(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The fields of a replica's answer that go on to the client, as ``Name: value`` lines
    in its order: all but ``_NOT_PASSED`` and those its Connection fields name."""
    named = {token.strip(b" \t").lower() for name, value in headers
             if name.lower() == b"connection" for token in value.split(b",")}
    return b"".join([b"%s: %s\r\n" % (name, value) for name, value in headers
                     if (lower := name.lower()) not in _NOT_PASSED and lower not in named])


_PASSED_KEPT = 256  # distinct answers' fields a proxy keeps (a few per replica per second)


def exhausted_counter(registry: CollectorRegistry | None) -> Counter:
    """One count for both planes (the native plane counts into the proxy's); ``registry``
    None: a worker's, counted in the workers' shared folder."""
    return Counter("dslab_plane_descriptors_exhausted", "Accepts (the native plane's) and "
                   "connects to replicas refused for want of descriptors", registry=registry)


def request_id_from(header: bytes | None, uri: str, rng: random.Random) -> str:
    """The client's ``X-Request-ID``, else its ``?rid=``, else a random 6-digit id."""
    if header:
        return header.decode("latin-1")
    if "rid=" in uri:
        for pair in uri.partition("?")[2].split("&"):
            key, _, value = pair.partition("=")
            if key == "rid" and value:
                return value
    return str(rng.randint(100000, 999999))


class Proxy:
    """``inflight`` is counted always (the metrics show it); ``metrics`` reads the same one."""

    def __init__(self, replicas: Upstreams, inflight: Loads, metrics: ProxyMetrics, *,
                 rng: random.Random | None = None, balance_factor: float | None = None,
                 exhausted: Counter | None = None) -> None:
        if balance_factor is not None and balance_factor <= 1:
            raise ValueError(f"the balance factor must be above 1, got {balance_factor}")
        self.replicas = replicas
        self.rng = rng or random.Random()
        self.balance_factor = balance_factor  # None: the owner always (the assignment's rule)
        self.inflight = inflight
        self.metrics = metrics
        self.exhausted = (exhausted if exhausted is not None
                          else exhausted_counter(metrics.registry))
        self._metrics_handler = metrics_handler(self.metrics.registry)
        self._direct = Direct(self._start)
        # ``end_to_end`` of the answers seen, by their heads (``UpstreamResponse.head``).
        self._passed: dict[bytes, bytes] = {}

    def route(self, method: bytes, path: str) -> Handler | Direct | None:
        if method != b"GET":
            return None
        if path == "/metrics":
            return self._metrics_handler
        return self._direct if path not in ADMIN_PATHS else None

    def _start(self, request: FrontRequest, respond: Respond) -> None:
        """The owner on an idle connection, answered by callback; else ``answer``'s path."""
        uri = request.uri
        header = request.request_id
        request_id = (header.decode("latin-1") if header
                      else request_id_from(None, uri, self.rng))
        replicas = self.replicas
        if self.balance_factor is not None:
            self._answer_later(request, respond, uri, request_id)
            return
        try:
            owner = replicas.ring.lookup(request_number(request_id))
        except EmptyRingError:
            self._answer_later(request, respond, uri, request_id)
            return
        pool = replicas.pool(owner)
        if pool is None:
            self._answer_later(request, respond, uri, request_id)
            return
        inflight = self.inflight
        token = inflight.take(owner)
        started = time.perf_counter_ns()

        def ended(response: UpstreamResponse | None,
                  error: UpstreamError | OutOfDescriptors | None) -> None:
            inflight.release(token)  # called from the pool's parser: nothing may escape
            try:
                if response is not None:
                    answer = self._answered(uri, owner, response, started, retried=False)
                elif isinstance(error, OutOfDescriptors):  # a reconnect found none
                    answer = self._out_of_descriptors(uri, error)
                else:
                    self._failed(owner, error or UpstreamError("no answer"))
                    self._answer_later(request, respond, uri, request_id, failed=owner,
                                       started=started)
                    return
            except Exception:
                log.exception("proxying %s failed", uri)
                answer = SERVICE_FAILURE
            respond(request, answer)

        if not pool.send(format_get(uri, owner, request_id, request.client), ended):
            inflight.release(token)
            self._answer_later(request, respond, uri, request_id)

    def _answer_later(self, request: FrontRequest, respond: Respond, uri: str, request_id: str,
                      failed: str | None = None, started: int | None = None) -> None:
        task = asyncio.ensure_future(self.answer(uri, request_id, failed=failed, started=started,
                                                 client=request.client))

        def answered(task: asyncio.Task[Answer]) -> None:
            if task.cancelled():
                return  # the loop is going down: the connection goes with it
            error = task.exception()
            if error is not None:
                log.error("proxying %s failed", uri, exc_info=error)
                respond(request, SERVICE_FAILURE)
            else:
                respond(request, task.result())
        task.add_done_callback(answered)

    def _failed(self, name: str, exc: Exception) -> None:
        self.metrics.failures.labels(name).inc()
        self.replicas.suspect(name, exc)

    async def answer(self, uri: str, request_id: str, *, failed: str | None = None,
                     started: int | None = None, client: str = "") -> Answer:
        """``failed``: the owner, tried already and failed (counted and reported): the rest
        of the ring is tried, from the next replica clockwise. ``started``: when the request
        began (``time.perf_counter_ns``), if before this. ``client``: the client's address."""
        replicas, inflight = self.replicas, self.inflight
        rid = request_number(request_id)
        started = time.perf_counter_ns() if started is None else started
        retried = failed is not None

        async def fetch(name: str) -> UpstreamResponse:
            token = inflight.take(name)  # with the choice, no await between: the bound needs it
            try:
                return await replicas.fetch(name, format_get(uri, name, request_id, client))
            finally:
                inflight.release(token)

        def on_failure(name: str, exc: Exception) -> None:
            nonlocal retried
            retried = True
            self._failed(name, exc)

        order: Iterable[str] | None = None
        if failed is not None:
            order = [name for name in replicas.ring.walk(rid) if name != failed]
        elif self.balance_factor is not None:
            order = bounded_walk(replicas.ring, rid, inflight, self.balance_factor)
        try:
            name, response = await route(rid, replicas.ring, fetch, on_failure, order=order,
                                         max_attempts=2 if failed is not None else 3)
        except NoReplicaAvailable as exc:
            after = f" (after {failed})" if failed is not None else ""
            log.warning("no replica could serve %s: %s%s", uri, exc, after)
            self.metrics.unavailable.inc()
            return Answer(503, _UNAVAILABLE)
        except OutOfDescriptors as exc:  # not the replica's failure: 503, no one suspected
            return self._out_of_descriptors(uri, exc)
        return self._answered(uri, name, response, started, retried)

    def _out_of_descriptors(self, uri: str, exc: OutOfDescriptors) -> Answer:
        log.warning("cannot proxy %s: %s", uri, exc)
        self.exhausted.inc()
        self.metrics.unavailable.inc()
        return Answer(503, _UNAVAILABLE)

    def _answered(self, uri: str, name: str, response: UpstreamResponse, started: int,
                  retried: bool) -> Answer:
        self.metrics.tally.answered(name, response.status, time.perf_counter_ns() - started)
        if retried:
            self.metrics.retries.inc()
        if response.status == 404:
            path = uri.partition("?")[0]
            return Answer(
                400, error_body(f"<Error> '{path}' endpoint does not exist in server replicas"),
                served_by=name)
        # A replica answers with the same fields again and again (its Date changes once a
        # second): the lines are kept by the answer's head, which costs a hash (kept in the
        # head's bytes object) instead of a filter.
        head = response.head
        passed = self._passed
        lines = passed.get(head) if head else None
        if lines is None:
            lines = end_to_end(response.headers)
            if head:
                if len(passed) >= _PASSED_KEPT:
                    passed.clear()
                passed[head] = lines
        return Answer(response.status, response.body, response.content_type, name, lines)
