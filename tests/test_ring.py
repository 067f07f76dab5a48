"""The hash ring as pure logic: placement, probing, lookups, and what moves on add/remove."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from dslab.ring import (
    HASH_PAIRS,
    ConsistentHashRing,
    DuplicateServerError,
    EmptyRingError,
    RingError,
    RingFullError,
    UnknownServerError,
    get_hash_pair,
    request_number,
    server_number,
)

_rng = random.Random(7)
RIDS = [_rng.randint(100000, 999999) for _ in range(10000)]
ALL_HASHES = sorted(HASH_PAIRS)


def owners(ring: ConsistentHashRing, rids=RIDS) -> dict[int, str]:
    return {rid: ring.lookup(rid) for rid in rids}


def test_seed_functions_are_the_assignments():
    seed = get_hash_pair("seed")
    for i in range(50):
        assert seed.request(i) == i * i + 2 * i + 17
        for j in range(9):
            assert seed.virtual(i, j) == i * i + j * j + 2 * j + 25


def test_unknown_hash_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown hash function 'nope'; known: blake2b"):
        ConsistentHashRing(hashes="nope")


@pytest.mark.parametrize("hashes", ALL_HASHES)
def test_every_server_gets_k_distinct_virtual_nodes(hashes):
    ring = ConsistentHashRing(slots=512, vnodes=9, hashes=hashes,
                              servers=[f"Server{i}" for i in range(1, 7)])
    all_slots = [slot for name in ring.servers for slot in ring.slots_of(name)]
    assert all(len(ring.slots_of(name)) == 9 for name in ring.servers)
    assert len(set(all_slots)) == len(all_slots) == 6 * 9
    assert sum(owner is not None for owner in ring.owners()) == 54


def test_linear_probing_moves_a_collision_to_the_next_free_slot():
    # Phi(1, 1) = 1 + 1 + 2 + 25 = 29 = Phi(2, 0): Server2's first node collides with Server1's.
    ring = ConsistentHashRing(hashes="seed", probing="linear", servers=["Server1"])
    assert 29 in ring.slots_of("Server1")
    assert ring.add("Server2")[0] == 30


def test_quadratic_probing_steps_by_squares():
    ring = ConsistentHashRing(slots=64, vnodes=1, hashes="seed", probing="quadratic")
    # Phi(i, 0) = i^2 + 25: "S0" sits on 25, so do "S8" (89 % 64) and "S24" (601 % 64 = 25).
    assert ring.add("S0") == [25]
    assert ring.add("S8") == [26]  # 25 + 1
    assert ring.add("S24") == [29]  # 25 + 1 taken, 25 + 4 free


def test_quadratic_probing_can_fail_with_free_slots_and_says_so():
    # Squares modulo 16 are 0, 1, 4, 9: from one base only four slots are reachable.
    ring = ConsistentHashRing(slots=16, vnodes=1, hashes="linear", probing="quadratic")
    names = [f"n{16 * k}" for k in range(5)]  # linear Phi(i, 0) = 37 i: all land on slot 0
    for name in names[:4]:
        ring.add(name)
    before = ring.owners()
    with pytest.raises(RingFullError, match=r"quadratic probing .*\(12 of 16 slots free"):
        ring.add(names[4])
    assert ring.owners() == before and names[4] not in ring


def test_full_ring_refuses_a_server_and_is_left_unchanged():
    ring = ConsistentHashRing(slots=512, vnodes=9, hashes="blake2b")
    for k in range(ring.capacity):
        ring.add(f"r{k}")
    assert ring.capacity == 56
    before = ring.owners()
    with pytest.raises(RingFullError, match="K=9 fits at most 56 servers"):
        ring.add("one-too-many")
    assert ring.owners() == before and len(ring) == 56


def test_check_can_add_does_not_change_the_ring():
    ring = ConsistentHashRing(slots=20, vnodes=5, hashes="blake2b", servers=["a1", "a2", "a3"])
    before = ring.owners()
    ring.check_can_add(["a4"])
    with pytest.raises(RingFullError):
        ring.check_can_add(["a4", "a5"])
    assert ring.owners() == before and ring.servers == ["a1", "a2", "a3"]


@pytest.mark.parametrize("hashes", ALL_HASHES)
def test_removing_a_server_moves_only_its_own_requests(hashes):
    ring = ConsistentHashRing(hashes=hashes, servers=[f"Server{i}" for i in range(1, 6)])
    before = owners(ring)
    ring.remove("Server3")
    after = owners(ring)
    moved = {rid for rid in RIDS if before[rid] != after[rid]}
    assert moved == {rid for rid in RIDS if before[rid] == "Server3"}
    assert "Server3" not in after.values()


@pytest.mark.parametrize("hashes", ALL_HASHES)
def test_adding_a_server_moves_requests_only_to_it_and_removing_it_restores_them(hashes):
    ring = ConsistentHashRing(hashes=hashes, servers=["Server1", "Server2", "Server3"])
    before = owners(ring)
    ring.add("Server58127")
    during = owners(ring)
    assert all(during[rid] in (before[rid], "Server58127") for rid in RIDS)
    ring.remove("Server58127")
    assert owners(ring) == before


def test_membership_errors():
    ring = ConsistentHashRing(servers=["S1"])
    with pytest.raises(DuplicateServerError):
        ring.add("S1")
    ring.remove("S1")
    with pytest.raises(UnknownServerError):
        ring.remove("S1")
    with pytest.raises(EmptyRingError):
        ring.lookup(123456)
    assert list(ring.walk(123456)) == []
    with pytest.raises(RingError):
        ConsistentHashRing(vnodes=0)
    with pytest.raises(RingError):
        ConsistentHashRing(probing="cubic")


@pytest.mark.parametrize("hashes", ALL_HASHES)
def test_walk_starts_at_the_owner_and_visits_each_server_once(hashes):
    names = [f"Server{i}" for i in range(1, 7)]
    ring = ConsistentHashRing(hashes=hashes, servers=names)
    for rid in RIDS[:500]:
        walked = list(ring.walk(rid))
        assert walked[0] == ring.lookup(rid)
        assert sorted(walked) == sorted(names)


def test_walk_in_progress_keeps_its_snapshot_when_the_ring_changes():
    ring = ConsistentHashRing(hashes="blake2b", servers=["a1", "a2", "a3"])
    walk = ring.walk(RIDS[0])
    first = next(walk)
    ring.remove(first)
    ring.add("b1")
    rest = list(walk)
    assert first not in rest and "b1" not in rest and len(rest) == 2


def test_seed_hash_reaches_few_slots_and_a_mixed_hash_balances_better():
    """The distribution figures behind experiment A-4, with stated bounds."""
    names = ["Server1", "Server2", "Server3"]
    seed = ConsistentHashRing(hashes="seed", servers=names)
    mixed = ConsistentHashRing(hashes="blake2b", servers=names)
    # (rid + 1)^2 + 16 mod 512: squares modulo 2^9 take fewer than a fifth of the residues.
    assert len({seed.slot_of(rid) for rid in RIDS}) < 100
    assert len({mixed.slot_of(rid) for rid in RIDS}) == 512

    def max_over_mean(ring: ConsistentHashRing) -> float:
        load = Counter(owners(ring).values())
        return max(load.values()) / (len(RIDS) / len(names))

    assert max_over_mean(mixed) < 1.35
    assert max_over_mean(seed) > 2 * max_over_mean(mixed) - 1


def test_server_number_from_trailing_digits_else_a_stable_hash():
    assert server_number("Server3") == 3
    assert server_number("S10") == 10
    assert server_number("Server58127") == 58127
    assert server_number("alpha") == server_number("ALPHA")  # DNS names ignore case
    assert server_number("alpha") != server_number("beta")
    assert 0 <= server_number("alpha") < 2**32


def test_request_number_uses_digits_else_hashes_the_text():
    assert request_number("132574") == 132574
    uuid = "3f1c9a3e-8a7b-4c1d-9d1e-7f00a1b2c3d4"
    assert request_number(uuid) == request_number(uuid) != request_number(uuid + "x")
    assert request_number("١٢٣") != 123  # non-ASCII digits are text, not numbers


# ---- analysis: loads, disruption ----------------------------------------------------------------
def test_moved_share_on_removal_is_the_removed_servers_share():
    from dslab.ring.analysis import assign, loads, moved_share

    names = [f"Server{i}" for i in range(1, 6)]
    ring = ConsistentHashRing(hashes="blake2b", servers=names)
    before = assign(ring, RIDS)
    share_of_5 = loads(before, names)["Server5"] / len(RIDS)
    ring.remove("Server5")
    assert moved_share(before, assign(ring, RIDS)) == pytest.approx(share_of_5)
