"""The member sets a shard's elections step through when its servers change (pure): one
server at a time, so that every majority of one set meets every majority of the next, and
a write committed before can never be missing from every promise of the next election."""

from __future__ import annotations

from itertools import combinations

from hypothesis import given
from hypothesis import strategies as st

from dslab.db.primaries import steps
from dslab.replication import majority

NAMES = st.sets(st.sampled_from("ABCDEFG"), max_size=5).map(sorted)


def majorities(members: tuple[str, ...]) -> list[set[str]]:
    return [set(c) for c in combinations(members, majority(len(members)))]


def meet(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return all(x & y for x in majorities(a) for y in majorities(b))


def test_a_server_lost_and_its_replacement_are_two_steps_not_one():
    """{A, B, C} to {A, B, D} at once: {B, D} is a majority of the new set and misses a
    write committed on {A, C}. Stepped, every pair of neighbours meets."""
    assert not meet(("A", "B", "C"), ("A", "B", "D"))
    assert steps(("A", "B", "C"), ["A", "B", "D"]) == [("A", "B"), ("A", "B", "D")]


def test_no_change_elects_over_the_same_set_and_a_first_election_over_the_live_one():
    assert steps(("A", "B", "C"), ["A", "B", "C"]) == [("A", "B", "C")]
    assert steps(None, ["B", "A"]) == [("B", "A")]


@given(NAMES.filter(bool).map(tuple), NAMES.filter(bool))
def test_every_step_changes_one_server_and_neighbours_majorities_meet(last, live):
    path = steps(last, live)
    assert path[-1] == tuple(sorted(live)) or set(path[-1]) == set(live)
    previous = last
    for members in path:
        assert len(set(previous) ^ set(members)) <= 1, (previous, members)
        assert members, "a set is never empty"
        assert meet(previous, members)
        previous = members
