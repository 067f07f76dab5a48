"""A dead replica under full load costs the native plane's control loop a bounded number of
wake-ups: the plane coalesces failed tries into counts per replica and wakes the control loop
at most once per interval (``native._EVENT_INTERVAL``), however many requests fail."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dslab.balancer import native
from dslab.stack import BalancerProcess

pytestmark = pytest.mark.skipif(not native.available() and shutil.which("cargo") is None,
                                reason="no Rust toolchain here: the native plane is not built")

LOAD_SECONDS = 2.0
CLIENTS = 16


def metrics(balancer: BalancerProcess) -> dict[str, float]:
    text = httpx.get(f"{balancer.url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0) + sample.value
    return out


def load(port: int, seconds: float, outcomes: list[str]) -> None:
    """GETs on one kept connection, ids spread over the ring, for ``seconds``: each answer's
    status line, or the exception that ended it (every one a failure)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            reader = sock.makefile("rb")
            k, end = 0, time.monotonic() + seconds
            while time.monotonic() < end:
                k += 1
                sock.sendall(b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: %d\r\n\r\n" % k)
                status = reader.readline()
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                reader.read(length)
                outcomes.append(status.decode("latin-1").strip())
    except Exception as exc:  # noqa: BLE001 - every exception counts as a failure
        outcomes.append(f"exception: {exc!r}")


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
    before = metrics(balancer)
    outcomes: list[str] = []
    threads = [threading.Thread(target=load, args=(balancer.port, LOAD_SECONDS, outcomes))
               for _ in range(CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    after = metrics(balancer)

    assert outcomes and set(outcomes) == {"HTTP/1.1 200 OK"}  # failed over, every one
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
    print(f"{len(outcomes)} requests, {failures:g} failed tries, {wakeups:g} wake-ups, "
          f"{drains:g} drains in {elapsed:.1f} s")
