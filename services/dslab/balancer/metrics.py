"""The Part 1 balancer's metrics (Prometheus), on top of the keeper's (``keeper/metrics.py``).

One process: the counters live in this process's registry. Several workers
(``--workers``): prometheus_client's multiprocess mode, chosen by ``PROMETHEUS_MULTIPROC_DIR``
in each worker's environment, keeps every worker's counters in files of that folder, and any
worker's /metrics sums them all (so a worker that died still counts what it served); the
keeper's counts and the loads come from the primary's membership and the shared table.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ..common.metrics import LATENCY_BUCKETS
from ..keeper.bounded import Loads

__all__ = ["ProxyMetrics"]


class _InFlightCollector(Collector):
    def __init__(self, inflight: Loads) -> None:
        self.inflight = inflight

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("dslab_requests_in_flight", "Proxied requests waiting for "
                                  "a replica's answer", labels=["replica"])
        for name, count in sorted(self.inflight.loads().items()):
            gauge.add_metric([name], count)
        yield gauge


class ProxyMetrics:
    """``registry`` is what /metrics serves; ``shared_dir``: the workers' metrics folder."""

    def __init__(self, inflight: Loads, collectors: Sequence[Collector] = (), *,
                 shared_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        # With several workers the counters write to files, and /metrics reads the files.
        own = None if shared_dir is not None else self.registry
        self.requests = Counter("dslab_requests", "Proxied requests, by the replica that "
                                "answered and its status", ["replica", "code"], registry=own)
        self.failures = Counter("dslab_upstream_failures", "Tries on which a replica gave no "
                                "answer", ["replica"], registry=own)
        self.retries = Counter("dslab_retries", "Requests answered by another replica than "
                               "the first one tried", registry=own)
        self.unavailable = Counter("dslab_unavailable", "Requests no replica answered (503)",
                                   registry=own)
        self.latency = Histogram("dslab_request_duration_seconds", "Time to a proxied answer",
                                 buckets=LATENCY_BUCKETS, registry=own)
        # A counter per (replica, status), looked up once: ``labels()`` costs 1.7 µs a call
        # here, 9 µs in multiprocess mode, where the counter's own ``inc`` costs 0.4 and 2.5.
        self._served: dict[tuple[str, int], Counter] = {}
        if shared_dir is not None:
            MultiProcessCollector(self.registry, path=str(shared_dir))  # type: ignore[no-untyped-call]
        for collector in collectors:
            self.registry.register(collector)
        self.registry.register(_InFlightCollector(inflight))

    def served(self, replica: str, status: int) -> Counter:
        """``requests`` for an answer of ``status`` from ``replica`` (the counter to ``inc``)."""
        counter = self._served.get((replica, status))
        if counter is None:
            counter = self._served[(replica, status)] = self.requests.labels(replica, str(status))
        return counter
