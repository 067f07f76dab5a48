"""GET /<path>: the replica the ring picks answers; the next one on the ring if it fails.

Transport-free: ``Proxy.answer`` takes the URI and the request id and returns what to send
back, so the front end (``common/front.py``) only parses and writes bytes. ``Proxy.route`` is
the front end's routing: every GET that is not an admin path is proxied.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Protocol

from ..common.errors import error_body
from ..common.front import Answer, FrontRequest, Handler
from ..common.metrics import metrics_handler
from ..keeper.bounded import Loads, bounded_walk
from ..keeper.routing import NoReplicaAvailable, route
from ..keeper.upstream import UpstreamResponse, format_get
from ..ring import HashRing, request_number
from .admin import ADMIN_PATHS
from .metrics import ProxyMetrics

__all__ = ["Proxy", "Upstreams", "request_id_from"]


class Upstreams(Protocol):
    """What the proxy routes over: the primary's ``ReplicaSet``, or a worker's copy of it."""

    ring: HashRing

    async def fetch(self, name: str, raw_request: bytes) -> UpstreamResponse: ...

    def suspect(self, name: str, exc: Exception | None = None) -> None: ...

log = logging.getLogger(__name__)


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
                 rng: random.Random | None = None, balance_factor: float | None = None) -> None:
        if balance_factor is not None and balance_factor <= 1:
            raise ValueError(f"the balance factor must be above 1, got {balance_factor}")
        self.replicas = replicas
        self.rng = rng or random.Random()
        self.balance_factor = balance_factor  # None: the owner always (the assignment's rule)
        self.inflight = inflight
        self.metrics = metrics
        self._metrics_handler = metrics_handler(self.metrics.registry)

    def route(self, method: bytes, path: str) -> Handler | None:
        if method != b"GET":
            return None
        if path == "/metrics":
            return self._metrics_handler
        return self._proxied if path not in ADMIN_PATHS else None

    async def _proxied(self, request: FrontRequest) -> Answer:
        uri = request.uri
        return await self.answer(uri, request_id_from(request.request_id, uri, self.rng))

    async def answer(self, uri: str, request_id: str) -> Answer:
        replicas, metrics, inflight = self.replicas, self.metrics, self.inflight
        rid = request_number(request_id)
        started = time.perf_counter()
        failed: list[str] = []

        async def fetch(name: str) -> UpstreamResponse:
            token = inflight.take(name)  # with the choice, no await between: the bound needs it
            try:
                return await replicas.fetch(name, format_get(uri, name, request_id))
            finally:
                inflight.release(token)

        def on_failure(name: str, exc: Exception) -> None:
            failed.append(name)
            metrics.failures.labels(name).inc()
            replicas.suspect(name, exc)

        order = None
        if self.balance_factor is not None:
            order = bounded_walk(replicas.ring, rid, inflight, self.balance_factor)
        try:
            name, response = await route(rid, replicas.ring, fetch, on_failure, order=order)
        except NoReplicaAvailable as exc:
            log.warning("no replica could serve %s: %s", uri, exc)
            metrics.unavailable.inc()
            return Answer(503, error_body("<Error> No replica is available"))
        metrics.latency.observe(time.perf_counter() - started)
        metrics.requests.labels(name, str(response.status)).inc()
        if failed:
            metrics.retries.inc()
        if response.status == 404:
            path = uri.partition("?")[0]
            return Answer(
                400, error_body(f"<Error> '{path}' endpoint does not exist in server replicas"),
                served_by=name)
        return Answer(response.status, response.body, response.content_type, name)
