"""The Part 1 balancer's metrics (Prometheus), on top of the keeper's (``keeper/metrics.py``).

What is counted per request (answers by replica and status, the latency histogram) is counted
in a ``Tally`` (``tally.py``: a few adds); the rare events (failures, retries, 503s) in
prometheus_client's counters. One process: both live in this process. Several workers
(``--workers``): each counts in files of the workers' shared folder (its own tally table, and
prometheus_client's multiprocess mode, chosen by ``PROMETHEUS_MULTIPROC_DIR`` in each
worker's environment), and any worker's /metrics sums them all (so a worker that died still
counts what it served); the keeper's counts and the loads come from the primary's membership
and the shared table.
"""

from __future__ import annotations

from collections import Counter as CounterOf
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ..keeper.bounded import Loads
from .tally import Tallied, Tally, TallyCollector, read_folder

__all__ = ["Counted", "ProxyMetrics", "SharedFolder"]


@dataclass(frozen=True)
class SharedFolder:
    """Where the workers of one balancer count: the folder, this worker's row of ``rows``."""

    path: Path
    row: int
    rows: int


class Counted(Protocol):
    """Another proxy's counts, served beside this process's own (the native plane's)."""

    def tallied(self) -> Tallied: ...

    def loads(self) -> dict[str, int]: ...


class _InFlightCollector(Collector):
    def __init__(self, inflight: Loads, also: list[Counted]) -> None:
        self.inflight = inflight
        self.also = also

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("dslab_requests_in_flight", "Proxied requests waiting for "
                                  "a replica's answer", labels=["replica"])
        loads = CounterOf(self.inflight.loads())
        for other in self.also:
            loads.update(other.loads())
        for name, count in sorted(loads.items()):
            gauge.add_metric([name], count)
        yield gauge


class ProxyMetrics:
    """``registry`` is what /metrics serves; ``tally`` counts the answers (the hot path)."""

    def __init__(self, inflight: Loads, collectors: Sequence[Collector] = (), *,
                 shared: SharedFolder | None = None) -> None:
        self.registry = CollectorRegistry()
        # With several workers the counters write to files, and /metrics reads the files.
        own = None if shared is not None else self.registry
        self.failures = Counter("dslab_upstream_failures", "Tries on which a replica gave no "
                                "answer", ["replica"], registry=own)
        self.retries = Counter("dslab_retries", "Requests answered by another replica than "
                               "the first one tried", registry=own)
        self.unavailable = Counter("dslab_unavailable", "Requests no replica answered (503)",
                                   registry=own)
        self._also: list[Counted] = []
        if shared is None:
            self.tally = Tally.in_memory()
            self.registry.register(TallyCollector(self._tallied))
        else:
            self.tally = Tally.in_folder(shared.path, shared.row)
            self.registry.register(TallyCollector(lambda: read_folder(shared.path, shared.rows)))
            MultiProcessCollector(self.registry, path=str(shared.path))  # type: ignore[no-untyped-call]
        for collector in collectors:
            self.registry.register(collector)
        self.registry.register(_InFlightCollector(inflight, self._also))

    def count_also(self, other: Counted) -> None:
        """Serve ``other``'s answers and loads summed with this process's (one process)."""
        self._also.append(other)

    def _tallied(self) -> Tallied:
        total = Tallied()
        total.add(self.tally.tallied())
        for other in self._also:
            total.add(other.tallied())
        return total
