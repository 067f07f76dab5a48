"""GET /metrics on both balancers (Prometheus' text format), checked against what the clients
saw: the per-replica request counts equal the ``X-Served-By`` counts, a killed replica shows as
an eviction and a replacement, Part 2's per-shard rows equal the rows written."""

from __future__ import annotations

import os
import signal
from collections import Counter

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conftest import SPAWN_BUDGET, detection_time, row, seed_init
from dslab.db.seed import shard_of
from dslab.lab import fire, random_rids
from dslab.stack import wait_until


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200 and "X-Served-By" not in response.headers
    assert response.headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def by_label(samples, name: str, label: str, **fixed: str) -> dict[str, float]:
    out = {}
    for (sample, labels), value in samples.items():
        labels = dict(labels)
        if sample == name and all(labels.get(k) == v for k, v in fixed.items()):
            out[labels[label]] = value
    return out


def test_part1_counts_match_what_clients_saw_and_a_kill_is_counted(start_balancer):
    balancer = start_balancer("-n", "3", "--hash", "blake2b")
    answers = fire(balancer.url, random_rids(1500, seed=8), concurrency=32, progress=False)
    assert set(answers["status"]) == {200}
    samples = scrape(balancer.url)
    served = Counter(answers["server"])
    assert by_label(samples, "dslab_requests_total", "replica", code="200") == \
        {name: float(count) for name, count in served.items()}
    assert by_label(samples, "dslab_requests_in_flight", "replica") == {}  # all answered
    assert samples[("dslab_request_duration_seconds_count", ())] == 1500
    assert samples[("dslab_replicas_serving", ())] == 3
    assert samples[("dslab_replacements_total", ())] == 0

    victim = balancer.replica_processes()["Server2"]
    os.kill(victim.pid, signal.SIGKILL)
    wait_until(lambda: scrape(balancer.url)[("dslab_replacements_total", ())] == 1,
               detection_time("dslab.balancer") + SPAWN_BUDGET["replica"],
               what="the replacement to be counted")
    samples = scrape(balancer.url)
    assert samples[("dslab_evictions_total", ())] == 1
    assert samples[("dslab_replicas_serving", ())] == 3
    assert httpx.post(f"{balancer.url}/metrics", timeout=10).status_code == 405


def test_part2_counts_rows_writes_and_refusals_per_shard(start_db):
    db = start_db()
    ids = [5, 6, 4100, 9000, 9001, 13000]
    with httpx.Client(base_url=db.url, timeout=60) as client:
        assert client.post("/init", json=seed_init()).status_code == 200
        for i in ids[:3]:  # single-row writes: group commit
            assert client.post("/write", json={"data": [row(i)]}).status_code == 200
        assert client.post("/write", json={"data": [row(i) for i in ids[3:]]}).status_code == 200
        assert client.post("/write", json={"data": [row(5)]}).status_code == 409
        assert client.post("/read", json={"Stud_id": {"low": 0, "high": 16383}}).status_code == 200
    samples = scrape(db.url)
    rows = Counter(shard_of(i) for i in ids)
    assert by_label(samples, "dslab_db_rows_written_total", "shard") == \
        {shard: float(n) for shard, n in rows.items()}
    assert by_label(samples, "dslab_db_requests_total", "code", endpoint="write") == \
        {"200": 4.0, "409": 1.0}
    assert by_label(samples, "dslab_db_requests_total", "code", endpoint="read") == {"200": 1.0}
    assert sum(by_label(samples, "dslab_db_batches_total", "shard").values()) == 3
    # one lock per batch and per shard of a multi-shard write (the refused one's too)
    assert by_label(samples, "dslab_db_lock_wait_seconds_count", "shard") == \
        {"sh1": 3.0, "sh2": 1.0, "sh3": 1.0, "sh4": 1.0}
    assert samples[("dslab_replicas_serving", ())] == 6
