"""The Part 1 balancer's metrics (Prometheus), on top of the keeper's (``common/metrics.py``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..common.metrics import LATENCY_BUCKETS
from ..keeper.bounded import InFlight
from ..keeper.metrics import KeeperCollector
from .membership import ReplicaSet

__all__ = ["ProxyMetrics"]


class _InFlightCollector(Collector):
    def __init__(self, inflight: InFlight) -> None:
        self.inflight = inflight

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("dslab_requests_in_flight", "Proxied requests waiting for "
                                  "a replica's answer", labels=["replica"])
        for name, count in sorted(self.inflight.counts.items()):
            gauge.add_metric([name], count)
        yield gauge


class ProxyMetrics:
    def __init__(self, replicas: ReplicaSet, inflight: InFlight) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("dslab_requests", "Proxied requests, by the replica that "
                                "answered and its status", ["replica", "code"],
                                registry=self.registry)
        self.failures = Counter("dslab_upstream_failures", "Tries on which a replica gave no "
                                "answer", ["replica"], registry=self.registry)
        self.retries = Counter("dslab_retries", "Requests answered by another replica than "
                               "the first one tried", registry=self.registry)
        self.unavailable = Counter("dslab_unavailable", "Requests no replica answered (503)",
                                   registry=self.registry)
        self.latency = Histogram("dslab_request_duration_seconds", "Time to a proxied answer",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(KeeperCollector(replicas.keeper))
        self.registry.register(_InFlightCollector(inflight))
