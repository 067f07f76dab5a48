"""The Part 1 balancer's Python plane on several cores (``--plane python --workers 2``): worker
processes that accept on one port and route over the primary's ring, kept in step with it,
restarted when they die, counted as one. (The native plane's workers are threads:
``test_native_plane.py``.)

Each burst opens many TCP connections at once, so the kernel spreads them over the workers
(SO_REUSEPORT); every burst checks that each worker held some of them, so no check below can
pass on one worker alone.
"""

from __future__ import annotations

import http.client
import os
import random
from collections import Counter

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from conftest import SPAWN_BUDGET, HomeLoad, balancer_options
from dslab.ring import make_ring, request_number
from dslab.stack import BalancerProcess, wait_until

WORKERS = 2


def burst(balancer: BalancerProcess, rids: list[int]) -> tuple[list[str], dict[int, int]]:
    """One GET /home per id, each on a connection of its own, all open at once: the replicas
    that answered, in order, and how many of the connections each worker held."""
    conns = [http.client.HTTPConnection(balancer.host, balancer.port, timeout=20) for _ in rids]
    try:
        for conn in conns:
            conn.connect()
        held = {w.pid: sum(1 for c in w.net_connections("tcp")
                           if c.laddr.port == balancer.port and c.status == psutil.CONN_ESTABLISHED)
                for w in balancer.worker_processes()}
        served = []
        for conn, rid in zip(conns, rids):
            conn.request("GET", "/home", headers={"X-Request-ID": str(rid)})
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
            served.append(response.getheader("X-Served-By", ""))
        return served, held
    finally:
        for conn in conns:
            conn.close()


def listening_workers(balancer: BalancerProcess) -> list[psutil.Process]:
    """The workers that accept on the balancer's port now."""
    found = []
    for worker in balancer.worker_processes():
        try:
            if any(c.laddr.port == balancer.port and c.status == psutil.CONN_LISTEN
                   for c in worker.net_connections("tcp")):
                found.append(worker)
        except psutil.Error:
            continue
    return found


def restarted(balancer: BalancerProcess, victim: psutil.Process) -> list[psutil.Process]:
    """Wait for ``victim``'s successor to listen. Its death is seen at once (its channel
    closes); then a Python process starts: a replica's budget."""
    def successor_listens() -> list[psutil.Process] | None:
        workers = listening_workers(balancer)
        fresh = len(workers) == WORKERS and victim.pid not in {w.pid for w in workers}
        return workers if fresh else None
    return wait_until(successor_listens, SPAWN_BUDGET["replica"] * 2,
                      what="the worker to be started again")


def assert_every_worker_took_some(held: dict[int, int]) -> None:
    assert len(held) == WORKERS and all(held.values()), held


def ring_of(names: list[str], *args: str):
    """The ring the balancer started with ``args`` builds from ``names`` added in order."""
    options = balancer_options("dslab.balancer", *args)
    ring = make_ring(options.algorithm, options.hash, slots=options.slots,
                     vnodes=options.vnodes, probing=options.probing)
    for name in names:
        ring.add(name)
    return ring


def test_every_add_and_rm_is_on_every_workers_ring_before_it_is_answered(start_balancer):
    """Right after each answer, a burst over many connections: every request lands where the
    new ring puts it, whichever worker took it."""
    args = ("--hash", "blake2b", "--workers", str(WORKERS), "--plane", "python")
    balancer = start_balancer("-n", "1", *args)
    names, rng = ["Server1"], random.Random(7)
    with httpx.Client(base_url=balancer.url, timeout=30) as client:
        for step in range(6):
            if step % 3 == 2:  # every third change takes one away
                gone = names[-2]
                answer = client.request("DELETE", "/rm", json={"n": 1, "hostnames": [gone]})
                names.remove(gone)
            else:
                answer = client.post("/add", json={"n": 1, "hostnames": [f"New{step}"]})
                names.append(f"New{step}")
            assert answer.status_code == 200, answer.text
            assert answer.json()["message"]["replicas"] == names
            rids = [rng.randrange(1, 10**6) for _ in range(60)]
            served, held = burst(balancer, rids)
            ring = ring_of(names, *args)
            assert served == [ring.lookup(request_number(str(rid))) for rid in rids]
            assert_every_worker_took_some(held)
            assert client.get("/rep").json()["message"]["replicas"] == names


def test_a_worker_killed_under_load_fails_only_what_it_held_and_comes_back(start_balancer):
    balancer = start_balancer("-n", "3", "--hash", "blake2b", "--workers", str(WORKERS), "--plane", "python")
    before = {w.pid for w in balancer.worker_processes()}
    with HomeLoad(balancer.url) as load:
        wait_until(lambda: load.ok > 300, 30, what="load on both workers")
        # The worker holding the most of the clients' connections (the kernel may have given
        # all four to one worker: then the other holds nothing to lose).
        held, victim = max(((sum(1 for c in w.net_connections("tcp")
                                  if c.laddr.port == balancer.port
                                  and c.status == psutil.CONN_ESTABLISHED), w)
                            for w in balancer.worker_processes()), key=lambda pair: pair[0])
        victim.kill()
        workers = restarted(balancer, victim)
        ok_then, failed_then = load.ok, len(load.failed)
        wait_until(lambda: load.ok > ok_then + 300, 30, what="load after the restart")
    # Only what the victim held failed: at most one request per client connection (a request
    # in flight on it, or a connection its queue had taken), none once its successor listens.
    assert held >= 1 and failed_then <= load.threads, (load.failed, held)
    assert len(load.failed) == failed_then, load.failed
    assert {w.pid for w in workers} - before, "no new worker"
    served, per_worker = burst(balancer, list(range(1, 41)))
    assert_every_worker_took_some(per_worker)


def counted(balancer: BalancerProcess) -> tuple[Counter, float]:
    """Requests per replica and the latency histogram's count, from /metrics."""
    text = httpx.get(f"{balancer.url}/metrics", timeout=10).text
    per_replica: Counter = Counter()
    timed = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dslab_requests_total":
                per_replica[sample.labels["replica"]] += int(sample.value)
            elif sample.name == "dslab_request_duration_seconds_count":
                timed += sample.value
    return per_replica, timed


def test_metrics_sum_every_workers_requests_even_a_dead_ones(start_balancer):
    balancer = start_balancer("-n", "3", "--hash", "blake2b", "--workers", str(WORKERS), "--plane", "python")
    rng = random.Random(3)
    clients_saw: Counter = Counter()
    served, held = burst(balancer, [rng.randrange(1, 10**6) for _ in range(150)])
    assert_every_worker_took_some(held)
    clients_saw.update(served)
    victim = balancer.worker_processes()[0]
    victim.kill()
    restarted(balancer, victim)
    served, held = burst(balancer, [rng.randrange(1, 10**6) for _ in range(150)])
    assert_every_worker_took_some(held)
    clients_saw.update(served)
    for _ in range(4):  # whichever worker answers /metrics, the same sums
        per_replica, timed = counted(balancer)
        assert per_replica == clients_saw
        assert timed == sum(clients_saw.values()) == 300


def test_sigterm_removes_the_workers_shared_files():
    balancer = BalancerProcess(args=["-n", "1", "--workers", str(WORKERS), "--plane", "python"]).start()
    shared = {w.environ()["PROMETHEUS_MULTIPROC_DIR"] for w in balancer.worker_processes()}
    assert len(shared) == 1 and os.path.isdir(folder := shared.pop()) is True
    assert balancer.stop() == 0
    assert not os.path.exists(folder)


def test_one_worker_is_a_single_process(start_balancer):
    balancer = start_balancer("-n", "2", "--workers", "1", "--plane", "python")
    assert balancer.worker_processes() == []
    assert len(balancer.descendants()) == 2  # its replicas only
