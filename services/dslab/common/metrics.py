"""Prometheus metrics: one registry per balancer, served at GET /metrics in the text format.

Each balancer makes its own (``balancer/metrics.py``, ``db/metrics.py``) and registers the
keeper's (``keeper/metrics.py``); this module serves a registry and shares the buckets.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .front import Answer, FrontRequest, Handler

__all__ = ["LATENCY_BUCKETS", "metrics_handler"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def metrics_handler(registry: CollectorRegistry) -> Handler:
    async def metrics(request: FrontRequest) -> Answer:
        return Answer(200, generate_latest(registry), CONTENT_TYPE_LATEST.encode())
    return metrics
