"""``--plane native``: the Part 1 balancer's data plane in compiled code (Rust, the module
``dslab_dataplane`` built from ``services/native``), this process its control plane.

Why: measured here (``make bench-lb``), the Python proxy at its leanest still spends more CPU
per request than HAProxy, and on two cores every microsecond it spends is taken from the
replicas. Its Python was spread over some forty functions with none above a tenth of it:
nothing left to cut but the interpreter and its event loop.

The split:

* The plane binds the port (one socket per thread, SO_REUSEPORT) and runs ``threads`` event
  loops of its own, outside the GIL. Each proxies the common request itself: a complete GET
  head with no body, to a path that is not an admin one, within the edge's limits. It routes
  as ``Proxy`` does: the request id (header, ``rid=``, else drawn), the ring's owner first,
  then the next distinct replicas clockwise, at most three tries; a replica's 404 becomes the
  contract's 400; no replica answering is a 503.
* Everything else (admin paths, /metrics, other methods, bodies, malformed or oversized
  requests, a head cut short) is *handed over*: the plane gives the connection, with what it
  read off it, to this process's ``Front``, which serves or refuses it as with the Python
  plane, and keeps it.
* This process keeps the replicas, the ring, the heartbeats and the supervisor. Each change of
  the ring is published to the plane (``publish``) before ``/add`` or ``/rm`` is answered: a
  table per slot of the replicas to try, and their addresses. The plane hashes request ids
  itself, bit for bit as ``dslab.ring`` does (tested on generated ids).
* The plane tells this process, through a socket it reads, of failed tries (counted per
  replica and reported to the keeper, whose heartbeats check at once), retries, 503s,
  descriptors run out, and handovers; /metrics reads the plane's counts beside this process's
  own. All but the handovers come as counts, and wake this process at most once per
  ``_EVENT_INTERVAL`` (a drain that found counts drains again an interval later, so none
  waits longer): a dead replica under full load costs the control loop a few wake-ups a
  second, not one per failed request.
* One count of connections under ``max_connections``, the plane's: a connection handed over
  keeps its place until the front end closes it (``release``).

What it does not do: the ring algorithm only (not maglev, rendezvous, multiprobe, jump) and no
bounded loads; the balancer refuses those options with this plane rather than ignore them.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from collections import Counter
from collections.abc import Iterator
from http import HTTPStatus
from itertools import islice

from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..common.edge import EdgeLimits
from ..common.errors import error_body
from ..common.front import Front
from ..common.metrics import LATENCY_BUCKETS
from ..keeper.errors import UpstreamError
from ..ring import HASH_PAIRS, ConsistentHashRing, HashRing
from .admin import ADMIN_PATHS
from .membership import ReplicaSet
from .metrics import ProxyMetrics
from .tally import Tallied

__all__ = ["NativePlane", "available", "refusal"]

log = logging.getLogger(__name__)

_TRIES = 3  # the owner and two more, as the Python proxy tries
_MARK = "\x00"  # where the path goes in the 404 -> 400 message
_EVENT_INTERVAL = 0.1  # seconds: at most one wake-up for counts alone per interval


def available() -> bool:
    try:
        import dslab_dataplane  # noqa: F401
    except ImportError:
        return False
    return True


def refusal(ring: HashRing, balance_factor: float | None) -> str | None:
    """Why the native plane cannot serve this configuration; None: it can."""
    if not isinstance(ring, ConsistentHashRing):
        return "the native plane routes the ring algorithm only (--algorithm ring)"
    if ring.hashes.name not in HASH_PAIRS:
        return f"the native plane does not know the hash {ring.hashes.name!r}"
    if balance_factor is not None:
        return "the native plane does not apply bounded loads (--balance-factor)"
    if not available():
        return ("the native plane is not installed: pip install ./services/native "
                "(make venv does)")
    return None


def walks(ring: ConsistentHashRing, tries: int = _TRIES) -> tuple[list[list[int]], list[str]]:
    """For every slot, the replicas a request there tries (indices into the names returned)."""
    names = sorted(ring.servers)
    index = {name: i for i, name in enumerate(names)}
    table = [[index[name] for name in islice(ring.walk_from(slot), tries)]
             for slot in range(ring.slots)]
    return table, names


class NativePlane:
    """The plane on ``host:port``, told every change of ``replicas``; ``start`` binds it."""

    def __init__(self, replicas: ReplicaSet, front: Front, metrics: ProxyMetrics, *,
                 host: str, port: int, threads: int, request_timeout: float,
                 limits: EdgeLimits, exhausted: PromCounter) -> None:
        """``exhausted``: the Python plane's count of connects refused for want of
        descriptors (``Proxy.exhausted``), which this plane's refusals add to."""
        import dslab_dataplane

        ring = replicas.ring
        assert isinstance(ring, ConsistentHashRing)
        self._replicas, self._ring, self._front, self._metrics = replicas, ring, front, metrics
        self._wake, wake_plane = socket.socketpair()
        self._wake.setblocking(False)
        wake_plane.setblocking(False)
        self._wake_plane = wake_plane  # the plane writes to its descriptor; kept open here
        prefix, _, suffix = error_body(
            f"<Error> '{_MARK}' endpoint does not exist in server replicas").partition(
                b"\\u0000")
        too_many = error_body(f"<Error> Too many connections: this process holds "
                              f"{limits.max_connections}, the most it takes")
        self._plane = dslab_dataplane.Plane(
            host, port, threads, wake_fd=wake_plane.fileno(),
            not_proxied=[p.encode() for p in sorted(ADMIN_PATHS)],
            max_request_line=limits.max_request_line, max_headers=limits.max_headers,
            max_header_bytes=limits.max_header_bytes, max_connections=limits.max_connections,
            idle_timeout=limits.idle_timeout, request_timeout=request_timeout,
            send_timeout=limits.send_timeout, event_interval=_EVENT_INTERVAL,
            bounds_ns=[round(b * 1e9) for b in LATENCY_BUCKETS],
            reasons=[(s.value, s.phrase.encode()) for s in HTTPStatus],
            not_found=(prefix, suffix), unavailable=error_body("<Error> No replica is available"),
            too_many=b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (len(too_many), too_many))
        self.port: int = self._plane.port
        self._adopting: set[asyncio.Task[None]] = set()
        self._again: asyncio.TimerHandle | None = None  # the drain an interval after one
        self._drains = PromCounter("dslab_plane_drains", "Times the control loop took the native "
                                   "plane's events (woken, or an interval after counts)",
                                   registry=metrics.registry)
        self._handovers = PromCounter("dslab_plane_handovers", "Connections the native plane "
                                      "handed over to this process's front end",
                                      registry=metrics.registry)
        metrics.registry.register(_PlaneCollector(self))
        self._exhausted = exhausted
        self.publish()
        asyncio.get_running_loop().add_reader(self._wake.fileno(), self._drain)

    def publish(self) -> None:
        """The ring as it is now, to every thread of the plane (before the change is answered)."""
        table, names = walks(self._ring)
        pools = {name: self._replicas.pool(name) for name in names}
        self._plane.publish(
            self._ring.hashes.name, self._ring.slots, table,
            [(name, (pool.host, pool.port) if pool is not None else None)
             for name, pool in pools.items()])

    def tallied(self) -> Tallied:
        answers, buckets, sum_ns = self._plane.tallied()
        return Tallied(Counter({(replica, status): n for replica, status, n in answers}),
                       list(buckets), sum_ns)

    def loads(self) -> dict[str, int]:
        return dict(self._plane.loads())

    def _drain(self) -> None:
        try:
            while self._wake.recv(4096):
                pass
        except BlockingIOError:
            pass
        self._drains.inc()
        handovers, failed, retried, unavailable, exhausted = self._plane.take_events()
        for fd, data in handovers:
            self._adopt(fd, data)
        if handovers:
            self._handovers.inc(len(handovers))
        for name, tries, error in failed:  # one suspicion per replica, however many tries
            self._metrics.failures.labels(name).inc(tries)
            self._replicas.suspect(name, UpstreamError(f"{error}; {tries} failed tries"))
        if retried:
            self._metrics.retries.inc(retried)
        if unavailable:
            log.warning("no replica could serve %d request(s)", unavailable)
            self._metrics.unavailable.inc(unavailable)
        if exhausted:
            # The balancer's own condition, not a replica's: no one is suspected.
            log.warning("out of descriptors: %d accept(s) or connect(s) refused (limit %d)",
                        exhausted, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
            self._exhausted.inc(exhausted)
        if (failed or retried or unavailable or exhausted) and self._again is None:
            # The plane stays quiet for an interval after a wake-up: look again then.
            self._again = asyncio.get_running_loop().call_later(_EVENT_INTERVAL, self._later)

    def _later(self) -> None:
        self._again = None
        self._drain()

    def _adopt(self, fd: int, data: bytes) -> None:
        sock = socket.socket(fileno=fd)
        # The plane counted it under max_connections; its place is freed when it closes here.
        task = asyncio.ensure_future(self._front.adopt(sock, data, on_close=self._plane.release))
        self._adopting.add(task)

        def adopted(task: asyncio.Task[None]) -> None:
            self._adopting.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.info("a connection handed over was lost: %s", task.exception())
                sock.close()
                self._plane.release()
        task.add_done_callback(adopted)

    def stop(self) -> None:
        """Stop the plane's threads (and every connection they hold), then stop listening to
        it; what it handed over and was not taken yet is closed."""
        self._plane.stop()
        if self._again is not None:
            self._again.cancel()
        asyncio.get_running_loop().remove_reader(self._wake.fileno())
        self._wake.close()
        self._wake_plane.close()


class _PlaneCollector:
    """What the plane did itself: the answers it proxied (none handed over), its connections,
    and its wake-ups of this process."""

    def __init__(self, plane: NativePlane) -> None:
        self._plane = plane

    def collect(self) -> Iterator[Metric]:
        plane = self._plane._plane
        answers, _, _ = plane.tallied()
        yield CounterMetricFamily("dslab_plane_answers", "Replica answers the native plane "
                                  "proxied itself", value=sum(n for _, _, n in answers))
        yield CounterMetricFamily("dslab_plane_wakeups", "Wake-ups the native plane sent this "
                                  "process", value=plane.wakeups)
        yield GaugeMetricFamily("dslab_plane_connections", "Connections counted under "
                                "max_connections (the plane's and those handed over)",
                                value=plane.connections)
