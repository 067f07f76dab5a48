"""Failure paths of Part 1: replicas killed or hung under load, the balancer itself stopped or killed."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import httpx
import psutil
import pytest

from conftest import SPAWN_BUDGET, Workers, assert_all_gone, detection_time
from dslab.stack import BalancerProcess, wait_until


class Load(Workers):
    """GET /home in a loop; counts answers per replica and failures."""

    def __init__(self, url: str, threads: int = 4) -> None:
        super().__init__(url, threads, timeout=20)
        self.ok: Counter[str] = Counter()
        self.failures: list[str] = []

    def step(self, client: httpx.Client) -> None:
        try:
            response = client.get("/home")
            served_by = response.headers.get("X-Served-By") if response.status_code == 200 else None
            failure = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            served_by, failure = None, type(exc).__name__
        with self.lock:
            if served_by:
                self.ok[served_by] += 1
            else:
                self.failures.append(failure)

    def total(self) -> int:
        with self.lock:
            return sum(self.ok.values()) + len(self.failures)


# Worker processes are the Python plane's; the native plane's workers are threads.
PLANES = [("python", 1), ("python", 2), ("native", 2)]


def worker_processes(plane: str, workers: int) -> int:
    return workers if plane == "python" and workers > 1 else 0


def replica_names(url: str) -> list[str]:
    return httpx.get(f"{url}/rep", timeout=10).json()["message"]["replicas"]


def test_replica_sigkilled_under_load_is_replaced_and_no_request_fails(balancer):
    victim = balancer.replica_processes()["Server2"]
    with Load(balancer.url) as load:
        wait_until(lambda: load.total() > 200, 20, what="load to start")
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        names = wait_until(
            lambda: (n := replica_names(balancer.url)) and "Server2" not in n and len(n) == 3 and n,
            10, what="a replacement for Server2")
        replaced_after = time.monotonic() - killed_at
        newcomer = (set(names) - {"Server1", "Server3"}).pop()
        wait_until(lambda: load.ok[newcomer] > 0, 10, what="the replacement to serve requests")
        served_before = load.total()
        wait_until(lambda: load.total() > served_before + 200, 20, what="more load after it")
    assert replaced_after < detection_time("dslab.balancer") + SPAWN_BUDGET["replica"]
    assert load.failures == [], f"clients saw failures: {Counter(load.failures)}"
    assert newcomer.startswith("Server") and newcomer in balancer.replica_processes()
    assert not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE


def test_hung_replica_is_detected_by_heartbeats_and_replaced(balancer):
    victim = balancer.replica_processes()["Server1"]
    os.kill(victim.pid, signal.SIGSTOP)  # alive as a process, silent as a server
    interval, slowest = 0.05, 0.0  # between polls of /rep; the longest a poll took
    try:
        stopped_at = time.monotonic()
        while True:  # evicted: off /rep at once, before its replacement is up
            asked = time.monotonic()
            listed = replica_names(balancer.url)
            slowest = max(slowest, time.monotonic() - asked)
            if "Server1" not in listed:
                break
            assert time.monotonic() - stopped_at < 10, "Server1 was never evicted"
            time.sleep(interval)
        detected_after = time.monotonic() - stopped_at
        names = wait_until(lambda: (n := replica_names(balancer.url)) and len(n) == 3 and n,
                           10, what="Server1's replacement")
    finally:
        if victim.is_running():
            os.kill(victim.pid, signal.SIGCONT)
    # Found within the heartbeat settings' bound, seen at most a poll and two answers later.
    assert detected_after < detection_time("dslab.balancer") + interval + 2 * slowest
    assert "Server1" not in names
    assert set(balancer.replica_processes()) == set(names)
    assert_all_gone([victim])
    with httpx.Client(base_url=balancer.url, timeout=10) as client:
        assert all(client.get("/home").status_code == 200 for _ in range(50))


def test_requests_to_a_hung_replica_fail_over_once_it_leaves_the_ring(start_balancer):
    # A long upstream timeout: without failing in-flight requests when the replica leaves
    # the ring, these clients would wait the full 30 s.
    b = start_balancer("-n", "3", "--hash", "blake2b", "--request-timeout", "30")
    victim = b.replica_processes()["Server3"]
    os.kill(victim.pid, signal.SIGSTOP)
    try:
        with Load(b.url, threads=6) as load:
            wait_until(lambda: "Server3" not in replica_names(b.url), 10, what="Server3 to leave")
            wait_until(lambda: load.total() > 300, 20, what="load after the failover")
    finally:
        if victim.is_running():
            os.kill(victim.pid, signal.SIGCONT)
    assert load.failures == []


@pytest.mark.parametrize(("plane", "workers"), PLANES)
def test_sigterm_stops_every_replica(start_balancer, plane, workers):
    b = start_balancer("-n", "4", "--workers", str(workers), "--plane", plane)
    procs = b.descendants()
    assert len(b.replica_processes()) == 4
    assert len(procs) == 4 + worker_processes(plane, workers)  # replicas, and workers if any
    assert b.stop() == 0
    assert_all_gone(procs)


@pytest.mark.parametrize(("plane", "workers"), PLANES)
def test_sigkilled_balancer_takes_its_replicas_with_it(plane, workers):
    b = BalancerProcess(args=["-n", "3", "--workers", str(workers), "--plane", plane]).start()
    procs = b.descendants()
    assert len(procs) == 3 + worker_processes(plane, workers)
    b.kill()  # SIGKILL: no cleanup code runs; the kernel's parent-death signal does it
    assert_all_gone(procs)


@pytest.mark.parametrize(("plane", "workers"), PLANES)
def test_balancer_that_cannot_bind_its_port_exits_and_leaves_nothing(start_balancer, plane,
                                                                     workers):
    # Workers share their port (SO_REUSEPORT): a second balancer must still be refused it.
    first = start_balancer("-n", "1", "--workers", str(workers), "--plane", plane)
    second = BalancerProcess(args=["-n", "2", "--workers", str(workers), "--plane", plane],
                             port=first.port)
    try:
        second.start()
    except Exception as exc:  # the ready pipe closes: it exited before listening
        assert "exited before it was ready" in str(exc)
    else:
        raise AssertionError("a second balancer bound an occupied port")
    assert second.proc is not None and second.proc.returncode not in (None, 0)
    assert len(first.replica_processes()) == 1  # only the first balancer's replica exists
    assert len(first.descendants()) == 1 + worker_processes(plane, workers)
