"""The history checker on hand-made histories: linearizable ones pass, the anomalies a
replicated store can show are found and shown (pure: no server runs)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dslab.faults.checks import check, per_second
from dslab.faults.history import History, Kind, Outcome, outcome_of
from dslab.faults.linearizable import Linearizable, NotLinearizable, Undecided, check_register
from dslab.faults.nemesis import FAULTS, Step

OK, FAIL, UNKNOWN = Outcome.OK, Outcome.FAIL, Outcome.UNKNOWN
W, R, INS = Kind.WRITE, Kind.READ, Kind.INSERT


def history(*ops: tuple) -> History:
    """ops: (process, kind, key, value, start, end, outcome)."""
    h = History()
    for op in ops:
        h.add(*op)
    return h


def verdict(*ops: tuple):
    return check_register(1, list(history(*ops)))


def test_a_sequential_register_is_linearizable():
    assert isinstance(verdict((0, W, 1, 1, 0, 1, OK), (1, R, 1, 1, 2, 3, OK),
                              (0, W, 1, 2, 4, 5, OK), (1, R, 1, 2, 6, 7, OK)), Linearizable)


def test_a_read_concurrent_with_a_write_may_see_either_value():
    for seen in (1, 2):
        assert isinstance(verdict((0, W, 1, 1, 0, 1, OK), (0, W, 1, 2, 2, 6, OK),
                                  (1, R, 1, seen, 3, 4, OK)), Linearizable)


def test_a_read_that_goes_back_in_time_is_found_and_shown():
    """The case seen here: version 89 read, then a read that began after it ended returns 88
    (a write applied on one replica and not yet on the next)."""
    v = verdict((0, W, 1, 88, 0, 1, OK), (0, W, 1, 89, 2, 10, OK),
                (1, R, 1, 89, 3, 4, OK), (2, R, 1, 88, 5, 6, OK))
    assert isinstance(v, NotLinearizable)
    assert v.value == 89 and v.written_by is not None and v.written_by.value == 89
    assert [op.value for op in v.stuck if op.kind is R] == [88]
    assert "returned 88" in v.explain() and "held 89" in v.explain()
    assert v.short() == ("key 1: client 2 read 88 at 5.00-6.00 s, when the register already "
                         "held 89")


def test_two_overlapping_reads_may_disagree_while_a_write_is_in_flight():
    """Overlapping reads can be ordered either way around the write: 89 then 88 is an anomaly
    only when the second read began after the first ended."""
    for first, second in ((89, 88), (88, 89)):
        assert isinstance(verdict((0, W, 1, 88, 0, 1, OK), (0, W, 1, 89, 2, 10, OK),
                                  (1, R, 1, first, 3, 5, OK), (2, R, 1, second, 4, 6, OK)),
                          Linearizable)


def test_an_undone_write_that_was_read_is_an_anomaly():
    """A write refused (4xx: it did not happen) whose value a client read anyway."""
    v = verdict((0, W, 1, 1, 0, 1, OK), (0, W, 1, 2, 2, 5, FAIL), (1, R, 1, 2, 3, 4, OK))
    assert isinstance(v, NotLinearizable)
    assert [op.value for op in v.stuck] == [2]


def test_an_unknown_write_may_take_effect_late_or_never():
    late = verdict((0, W, 1, 1, 0, 1, OK), (0, W, 1, 2, 2, 3, UNKNOWN),
                   (1, R, 1, 1, 4, 5, OK), (1, R, 1, 2, 20, 21, OK))
    never = verdict((0, W, 1, 1, 0, 1, OK), (0, W, 1, 2, 2, 3, UNKNOWN),
                    (1, R, 1, 1, 20, 21, OK))
    assert isinstance(late, Linearizable) and isinstance(never, Linearizable)


def test_an_unknown_write_seen_then_unseen_is_an_anomaly():
    """Taking effect is once: read as 2, then a later read of 1 (no write of 1 after)."""
    v = verdict((0, W, 1, 1, 0, 1, OK), (0, W, 1, 2, 2, 3, UNKNOWN),
                (1, R, 1, 2, 4, 5, OK), (1, R, 1, 1, 6, 7, OK))
    assert isinstance(v, NotLinearizable)


def test_a_read_of_nothing_after_an_acknowledged_insert_is_an_anomaly():
    assert isinstance(verdict((0, W, 1, 1, 0, 1, OK), (1, R, 1, None, 2, 3, OK)),
                      NotLinearizable)
    assert isinstance(verdict((1, R, 1, None, 0, 3, OK), (0, W, 1, 1, 1, 2, OK)), Linearizable)


def test_a_value_nobody_wrote_is_an_anomaly():
    assert isinstance(verdict((0, W, 1, 1, 0, 1, OK), (1, R, 1, 7, 2, 3, OK)), NotLinearizable)


def test_the_budget_gives_up_rather_than_guessing():
    """Many overlapping unknown writes and reads: a budget of a few states decides nothing."""
    ops = [(0, W, 1, v, 0, 1, UNKNOWN) for v in range(12)] + [(1, R, 1, 11, 50, 51, OK),
                                                             (1, R, 1, 99, 52, 53, OK)]
    assert isinstance(check_register(1, list(history(*ops)), budget=5), Undecided)
    assert isinstance(check_register(1, list(history(*ops))), NotLinearizable)


@given(st.integers(0, 2**32), st.integers(2, 6), st.integers(5, 40))
def test_histories_of_an_atomic_register_are_linearizable(seed, clients, n):
    """Each operation takes effect at one instant inside its interval on a real register;
    some clients' answers are lost (unknown); the checker must always find an order."""
    rng = random.Random(seed)
    events = []
    for k in range(n):
        start = rng.uniform(0, 100)
        end = start + rng.uniform(0, 10)
        events.append((rng.uniform(start, end), start, end, k % clients,
                       W if rng.random() < 0.4 else R))
    value, h, version = None, History(), 0
    for _at, start, end, client, kind in sorted(events):
        if kind is W:
            version += 1
            value = version
            outcome = UNKNOWN if rng.random() < 0.2 else OK
            h.add(client, W, 1, version, start, end, outcome)
        else:
            h.add(client, R, 1, value, start, end, OK)
    assert isinstance(check_register(1, list(h)), Linearizable)


@given(st.integers(0, 2**32))
def test_a_stale_read_after_the_fact_is_always_found(seed):
    """A sequential history with one read, after all else ended, of a value overwritten
    earlier: never linearizable."""
    rng = random.Random(seed)
    h, t = History(), 0.0
    for version in range(1, rng.randint(3, 12)):
        h.add(0, W, 1, version, t, t + 1, OK)
        t += 2
    h.add(1, R, 1, rng.randint(1, version - 1), t, t + 1, OK)
    assert isinstance(check_register(1, list(h)), NotLinearizable)


def test_the_run_check_finds_lost_phantom_and_altered_rows():
    h = history((0, INS, 10, 1, 0, 1, OK), (0, INS, 11, 1, 0, 1, OK), (0, INS, 12, 1, 0, 1, UNKNOWN),
                (0, INS, 13, 1, 0, 1, FAIL), (1, W, 20, 1, 0, 1, OK), (1, W, 20, 2, 2, 3, OK))
    assert check(h, {10: 1, 11: 1, 20: 2}).valid
    assert check(h, {10: 1, 11: 1, 12: 1, 20: 2}).valid  # an unknown insert may have happened
    report = check(h, {10: 1, 20: 2, 99: 1, 11: 5})
    assert [op.key for op in report.lost] == []
    assert report.phantoms == [99] and report.altered == [(11, 5)]
    report = check(h, {11: 1, 20: 1})  # 10 lost; register 20 went back to 1 after the run
    assert [op.key for op in report.lost] == [10]
    assert [a.key for a in report.anomalies] == [20]
    assert "1 acknowledged inserts lost" in report.explain()


def test_outcomes_and_the_timeline():
    assert outcome_of(200) is OK and outcome_of(409) is FAIL and outcome_of(503) is UNKNOWN
    assert outcome_of(None) is UNKNOWN and outcome_of(None, read=True) is FAIL
    h = history((0, INS, 1, 1, 0.1, 0.5, OK), (0, INS, 2, 1, 0.6, 1.2, UNKNOWN),
                (0, INS, 3, 1, 1.3, 1.4, FAIL))
    assert per_second(h) == {0: {"ok": 1}, 1: {"unknown": 1, "fail": 1}}


def test_a_schedule_step_names_a_known_fault():
    assert [Step(0, kind).kind for kind in FAULTS] == list(FAULTS)
    with pytest.raises(ValueError, match="unknown fault 'flood'"):
        Step(0, "flood")
    with pytest.raises(ValueError):
        Step(0, "lossy", share=1.5)
