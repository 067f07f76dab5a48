"""Part 1's observations are computed from the numbers (pure): each sentence that states an
effect appears when the numbers show it, and not otherwise."""

from __future__ import annotations

import pandas as pd

from dslab.lab import lbfindings


def a1(served: int, slots_reached: int = 84, busiest_reached: int = 70, succeeded: int = 300):
    return lbfindings.requests(succeeded=succeeded, total=300, rate=1000.0, p50_ms=3.0,
                               p99_ms=9.0, busiest="Server1", served=served, n=3,
                               slots_reached=slots_reached, slots=512,
                               busiest_reached=busiest_reached)


def test_a1_explains_a_skew_by_the_ring_only_when_there_is_one():
    skewed = a1(served=258)
    assert "Server1 served 86% of them, where an even split is 33% (busiest / mean 2.58)" in skewed
    assert "The split is skewed" in skewed
    assert "only 84 of the ring's 512 slots, and 70 of those (83%) lie on Server1's arcs" in skewed
    assert "near even" not in skewed and "failed" not in skewed

    even = a1(served=104, slots_reached=290, busiest_reached=100)
    assert "The split is near even." in even
    assert "skewed" not in even and "hash's" not in even

    # skewed although the hash reaches most slots: the reach is not called "only"
    wide = a1(served=200, slots_reached=400, busiest_reached=260)
    assert "The split is skewed" in wide and "only" not in wide

    # between near even and skewed: neither is claimed
    between = a1(served=115)
    assert "skewed" not in between and "near even" not in between


def test_a1_says_how_many_failed_only_when_some_did():
    assert "**12 failed.**" in a1(served=258, succeeded=288)
    assert "288 of 300 requests" in a1(served=258, succeeded=288)
    assert "failed" not in a1(served=258)


def table(spreads: dict[int, float]) -> pd.DataFrame:
    return pd.DataFrame([{"N": n, "mean": 600 / n, "min": 600 / n / m, "max": 600 / n * m,
                          "max_over_mean": m} for n, m in spreads.items()])


def test_a2_says_whether_the_spread_falls_grows_or_stays():
    assert "The spread falls as replicas are added: the busiest replica carries 2.00× the " \
        "average at N = 2 and 1.20× at N = 6" in lbfindings.spread(table({2: 2.0, 4: 1.5, 6: 1.2}))
    grows = lbfindings.spread(table({2: 1.1, 4: 2.6, 6: 2.0}))
    assert "The spread grows as replicas are added" in grows
    assert "at N = 6 (worst 2.60× at N = 4)." in grows  # the best is N = 2's, said already
    middle = lbfindings.spread(table({2: 1.5, 3: 1.1, 4: 2.6, 6: 2.0}))
    assert "(worst 2.60× at N = 4; best 1.10× at N = 3)" in middle
    same = lbfindings.spread(table({2: 1.8, 6: 1.85}))
    assert "stays about the same" in same and "falls" not in same and "grows" not in same
    one = lbfindings.spread(table({3: 1.5}))
    assert "The spread" not in one and "At N = 3 the idlest replica got 133 requests" in one


def events(failed: int = 0, replacement: str | None = "Server7", retries: int = 5,
           statuses: dict | None = None) -> dict:
    out = {"requests": 1000, "failed": failed, "victim": "Server1", "killed_at": 2.0,
           "retries": retries, "failed_statuses": statuses or {}}
    if replacement:
        out.update(replacement=replacement, listed_at=2.4, recovery_s=0.6)
    return out


def test_a3_says_clients_did_not_see_the_failure_only_when_none_failed():
    clean = lbfindings.kill(events(), 6.0)
    assert "No client saw the failure." in clean and "**0 failed**" in clean
    assert "Its replacement Server7 was in /rep 0.40 s later and served its first request " \
        "0.60 s after the kill." in clean
    assert "answered 5 requests from another replica" in clean

    seen = lbfindings.kill(events(failed=3, statuses={502: 2, 0: 1}), 6.0)
    assert "No client saw" not in seen
    assert "Clients saw the failure: 3 requests failed (1 × no answer, 2 × 502)." in seen


def test_a3_states_a_missing_replacement_and_no_retries_as_such():
    text = lbfindings.kill(events(replacement=None, retries=0), 6.0)
    assert "No replacement was listed in /rep before the run ended." in text
    assert "another replica" not in text


def test_the_machine_sentence_counts_this_machines_cores():
    assert "**8 cores**" in lbfindings.machine(8) and "**1 core**" in lbfindings.machine(1)
    assert "two" not in lbfindings.machine(8)
