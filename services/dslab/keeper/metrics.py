"""The keeper's counts as Prometheus metrics, read at scrape time: the keeper itself keeps
plain integers and knows nothing of Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["KeeperCollector", "KeeperCounts"]


class KeeperCounts(Protocol):
    """What the metrics read: a ``ReplicaKeeper``, or a worker's copy of its counts."""

    @property
    def replacements(self) -> int: ...

    @property
    def evictions(self) -> int: ...

    def serving(self) -> list[str]: ...

    def evicted(self) -> list[str]: ...

    def placement(self) -> dict[str, str]:
        """Serving replica -> the node it runs on, for those whose backend knows one."""
        ...


class KeeperCollector(Collector):
    def __init__(self, keeper: KeeperCounts) -> None:
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
        nodes = GaugeMetricFamily("dslab_replica_node", "Where each replica runs (1 per "
                                  "replica; Swarm: its node's hostname)", labels=["replica", "node"])
        for replica, node in sorted(keeper.placement().items()):
            nodes.add_metric([replica, node], 1)
        yield nodes
