"""The Part 2 balancer's metrics (Prometheus), on top of the keeper's (``common/metrics.py``):
its data endpoints, and per shard the writes, rows, batches and lock waits."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..common.metrics import LATENCY_BUCKETS
from ..keeper.keeper import ReplicaKeeper
from ..keeper.metrics import KeeperCollector

__all__ = ["DbMetrics"]


class DbMetrics:
    def __init__(self, keeper: ReplicaKeeper) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("dslab_db_requests", "Data requests, by endpoint and status",
                                ["endpoint", "code"], registry=r)
        self.latency = Histogram("dslab_db_request_duration_seconds", "Time to answer a data "
                                 "request", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.writes = Counter("dslab_db_writes", "Write requests acknowledged, per shard",
                              ["shard"], registry=r)
        self.rows = Counter("dslab_db_rows_written", "Rows acknowledged, per shard", ["shard"],
                            registry=r)
        self.batches = Counter("dslab_db_batches", "Group-commit batches committed, per shard",
                               ["shard"], registry=r)
        self.lock_wait = Histogram("dslab_db_lock_wait_seconds", "Time waiting for a shard's "
                                   "lock", ["shard"], buckets=LATENCY_BUCKETS, registry=r)
        self.revival = Histogram("dslab_db_shard_revival_seconds", "A shard whose servers all "
                                 "died: from the restart in place until its first server is "
                                 "back (restart) and until the shard serves (serving)",
                                 ["phase"], buckets=(0.5, 1, 2, 3, 4, 5, 7.5, 10, 20, 30),
                                 registry=r)
        self.elections = Counter("dslab_db_elections", "Elections of a shard's primary "
                                 "(--replication majority)", ["shard"], registry=r)
        self.election_seconds = Histogram("dslab_db_election_duration_seconds", "Time to elect "
                                          "a shard's primary", ["shard"],
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.term = Gauge("dslab_db_shard_term", "The term of a shard's primary", ["shard"],
                          registry=r)
        self.primary = Gauge("dslab_db_shard_primary", "1 for each shard's current primary",
                             ["shard", "server"], registry=r)
        self._primary_of: dict[str, str] = {}
        r.register(KeeperCollector(keeper))

    def elected(self, shard: str, primary: str, term: int, seconds: float) -> None:
        self.elections.labels(shard).inc()
        self.election_seconds.labels(shard).observe(seconds)
        self.term.labels(shard).set(term)
        earlier = self._primary_of.get(shard)
        if earlier is not None and earlier != primary:
            self.primary.remove(shard, earlier)
        self._primary_of[shard] = primary
        self.primary.labels(shard, primary).set(1)

    def acknowledged(self, shard: str, writes: int, rows: int, batch: bool) -> None:
        self.writes.labels(shard).inc(writes)
        self.rows.labels(shard).inc(rows)
        if batch:
            self.batches.labels(shard).inc()
