"""The proxy's per-request counts (``balancer/tally.py``): what is counted is what /metrics
shows, across tables, across a worker's successor, and past the table's capacity."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dslab.balancer import tally as tally_module
from dslab.balancer.tally import OVERFLOW, Tally, TallyCollector, read_folder
from dslab.common.metrics import LATENCY_BUCKETS

MS = 1_000_000  # nanoseconds


def exposed(read) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(TallyCollector(read))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_answers_and_latencies_are_exposed_as_counted():
    tally = Tally.in_memory()
    tally.answered("Server1", 200, 1 * MS)  # exactly a bound: counted in that bucket (le)
    tally.answered("Server1", 200, 3 * MS)
    tally.answered("Server2", 404, 7_000 * MS)  # past the last bound: +Inf only
    samples = exposed(tally.tallied)
    assert samples[("dslab_requests_total", (("code", "200"), ("replica", "Server1")))] == 2
    assert samples[("dslab_requests_total", (("code", "404"), ("replica", "Server2")))] == 1
    bucket = {labels[0][1]: value for (name, labels), value in samples.items()
              if name == "dslab_request_duration_seconds_bucket"}
    assert bucket["0.0005"] == 0 and bucket["0.001"] == 1 and bucket["0.002"] == 1
    assert bucket["0.005"] == 2 and bucket["5.0"] == 2 and bucket["+Inf"] == 3
    assert len(bucket) == len(LATENCY_BUCKETS) + 1
    assert samples[("dslab_request_duration_seconds_count", ())] == 3
    assert abs(samples[("dslab_request_duration_seconds_sum", ())] - 7.004) < 1e-9


def test_workers_tables_sum_and_a_successor_counts_on_in_its_predecessors(tmp_path):
    first, second = Tally.in_folder(tmp_path, 0), Tally.in_folder(tmp_path, 1)
    for _ in range(3):
        first.answered("Server1", 200, MS)
    second.answered("Server1", 200, MS)
    second.answered("Server2", 200, MS)
    first.close()  # worker 0 dies; its successor takes its table over
    successor = Tally.in_folder(tmp_path, 0)
    successor.answered("Server1", 200, MS)
    successor.answered("Server3", 503, MS)
    total = read_folder(tmp_path, 2)
    assert dict(total.answers) == {("Server1", 200): 5, ("Server2", 200): 1, ("Server3", 503): 1}
    assert sum(total.buckets) == 7 and total.sum_ns == 7 * MS
    assert successor.tallied().answers[("Server1", 200)] == 4  # one cell, not a second
    second.close()
    successor.close()


def test_a_key_line_being_written_is_not_read_and_a_missing_table_counts_nothing(tmp_path):
    tally = Tally.in_folder(tmp_path, 0)
    tally.answered("Server1", 200, MS)
    with open(tmp_path / "tally-0.keys", "a") as keys:
        keys.write('["Server9", 200, ')  # a writer's line cut short: no newline yet
    assert dict(read_folder(tmp_path, 2).answers) == {("Server1", 200): 1}
    tally.close()


def test_answers_past_the_capacity_are_counted_as_overflow(monkeypatch):
    monkeypatch.setattr(tally_module, "_OVERFLOW_CELL", tally_module._FIRST_ANSWER_CELL + 2)
    tally = Tally.in_memory()
    for replica in ("a", "b", "c", "d"):
        tally.answered(replica, 200, MS)
    tally.answered("d", 500, MS)
    tally.answered("a", 200, MS)
    assert dict(tally.tallied().answers) == {("a", 200): 2, ("b", 200): 1, (OVERFLOW, 0): 3}
    assert sum(tally.tallied().buckets) == 6
