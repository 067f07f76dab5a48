"""A dead replica under full load costs the native plane's control loop a bounded number of
wake-ups: the plane coalesces failed tries into counts per replica and wakes the control loop
at most once per interval (``native._EVENT_INTERVAL``), however many requests fail."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dslab.balancer import native
from dslab.lab.baseline import wrk
from dslab.stack import BalancerProcess

pytestmark = pytest.mark.skipif(not native.available() and shutil.which("cargo") is None,
                                reason="no Rust toolchain here: the native plane is not built")

LOAD_SECONDS = 2.0
CONNECTIONS = 32


def metrics(balancer: BalancerProcess) -> dict[str, float]:
    text = httpx.get(f"{balancer.url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0) + sample.value
    return out


def test_a_dead_replica_under_full_load_costs_a_bounded_event_rate(start_balancer):
    """The replica is stopped (SIGSTOP: a killed one is replaced at once, on its exit), and
    the keeper must not evict it during the load: a round a minute, and more misses than the
    wake-ups it may get. Each try on it fails after the (short) request timeout."""
    balancer = start_balancer("-n", "3", "--hash", "blake2b", "--plane", "native",
                              "--workers", "2", "--heartbeat-interval", "60",
                              "--heartbeat-misses", "1000", "--request-timeout", "0.1")
    victim = next(iter(balancer.replica_processes().values()))
    victim.suspend()
    try:
        run_load(balancer)
    finally:
        victim.resume()


def run_load(balancer: BalancerProcess) -> None:
    """Full load from wrk (random request ids, every socket error and non-2xx counted)."""
    before = metrics(balancer)
    started = time.monotonic()
    result = wrk([balancer.url], LOAD_SECONDS, CONNECTIONS)
    elapsed = time.monotonic() - started
    after = metrics(balancer)

    assert result.rps > 0 and result.errors == 0  # failed over, every one
    failures = after.get("dslab_upstream_failures_total", 0) - before.get("dslab_upstream_failures_total", 0)
    drains = after.get("dslab_plane_drains_total", 0) - before.get("dslab_plane_drains_total", 0)
    wakeups = after.get("dslab_plane_wakeups_total", 0) - before.get("dslab_plane_wakeups_total", 0)
    intervals = elapsed / native._EVENT_INTERVAL
    # About one wake-up per interval: from the plane, or the look again (+ the scrape's
    # handover, and an interval's worth of slack at either end).
    assert wakeups <= intervals + 3, (wakeups, intervals)
    assert drains <= 1.5 * intervals + 5, (drains, intervals)
    # ...while failed tries came by the hundred: one wake-up each would be far more.
    assert failures >= 3 * (intervals + 3), (failures, intervals)
    print(f"{result.rps * LOAD_SECONDS:.0f} requests, {failures:g} failed tries, {wakeups:g} wake-ups, "
          f"{drains:g} drains in {elapsed:.1f} s")
