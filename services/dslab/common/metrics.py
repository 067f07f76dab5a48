"""Prometheus metrics: one registry per balancer, served at GET /metrics in the text format.

What every balancer exports comes from here: ``KeeperCollector`` reads the replica keeper's
counts (replacements, evictions, replicas serving) at scrape time, so the keeper itself knows
nothing of Prometheus. Each balancer adds its own metrics (``balancer/metrics.py``,
``db/metrics.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ..keeper.keeper import ReplicaKeeper
from .front import Answer, FrontRequest, Handler

__all__ = ["KeeperCollector", "metrics_handler"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class KeeperCollector(Collector):
    def __init__(self, keeper: ReplicaKeeper) -> None:
        self.keeper = keeper

    def collect(self) -> Iterator[Metric]:
        keeper = self.keeper
        yield CounterMetricFamily("dslab_replacements", "Dead replicas replaced by a newcomer",
                                  value=keeper.replacements)
        yield CounterMetricFamily("dslab_evictions", "Replicas taken out of service (dead, "
                                  "or failed a request)", value=keeper.evictions)
        yield GaugeMetricFamily("dslab_replicas_serving", "Replicas started and not evicted",
                                value=len(keeper.serving()))
        yield GaugeMetricFamily("dslab_replicas_evicted", "Evicted replicas awaiting their "
                                "replacement", value=len(keeper.evicted()))


def metrics_handler(registry: CollectorRegistry) -> Handler:
    async def metrics(request: FrontRequest) -> Answer:
        return Answer(200, generate_latest(registry), CONTENT_TYPE_LATEST.encode())
    return metrics
