"""The checks of a run on hand-made histories and read-backs (pure: no server runs): refused
inserts that are held all the same, rows that vanish between two read-backs, and register
values checked across read-backs in their order."""

from __future__ import annotations

from dslab.faults.checks import check
from dslab.faults.history import History, Kind, Outcome

OK, FAIL, UNKNOWN = Outcome.OK, Outcome.FAIL, Outcome.UNKNOWN


def inserts(*ops: tuple[int, Outcome]) -> History:
    h = History()
    for n, (key, outcome) in enumerate(ops):
        h.add(0, Kind.INSERT, key, 1, n, n + 0.5, outcome)
    return h


def test_a_refused_insert_must_be_absent():
    h = inserts((1, OK), (2, FAIL))
    assert check(h, {1: 1}).valid
    report = check(h, {1: 1, 2: 1})
    assert [op.key for op in report.refused] == [2]
    assert "1 refused inserts held all the same" in report.explain()


def test_an_unknown_insert_may_appear_late_but_a_row_seen_may_not_vanish():
    """Seen at the first read-back, gone at the second: lost though it was never
    acknowledged. Absent at the first and there at the second: an unknown insert applied
    late, which is allowed."""
    h = inserts((1, OK), (2, UNKNOWN), (3, UNKNOWN))
    earlier = [(10.0, {1: 1, 2: 1})]
    assert check(h, {1: 1, 2: 1, 3: 1}, 20.0, earlier=earlier).valid
    report = check(h, {1: 1, 3: 1}, 20.0, earlier=earlier)
    assert report.vanished == [2] and not report.lost
    assert "1 rows seen by an earlier read-back and gone from a later one" in report.explain()


def test_a_register_value_read_back_may_not_go_back_at_the_next_read_back():
    """Version 2 of a register was an unknown write: held at the first read-back, it may not
    be version 1 again at the second (a power loss that undid it); version 3, never written,
    is altered."""
    h = History()
    h.add(0, Kind.WRITE, 7, 1, 0, 1, OK)
    h.add(0, Kind.WRITE, 7, 2, 2, 3, UNKNOWN)
    earlier = [(10.0, {7: 2})]
    assert check(h, {7: 2}, 20.0, earlier=earlier).valid
    assert check(h, {7: 1}, 20.0).valid  # alone, 1 is allowed: the unknown write never happened
    back = check(h, {7: 1}, 20.0, earlier=earlier)
    assert [a.key for a in back.anomalies] == [7]
    assert check(h, {7: 3}, 20.0).altered == [(7, 3)]
