"""The router's failover order, stepped through with an injected fetch (no network).

The real upstream path runs in the balancer tests; here each replica's behaviour is chosen
per test so that every failure order can be driven by hand.
"""

from __future__ import annotations

import asyncio

import pytest

from dslab.keeper.routing import NoReplicaAvailable, route
from dslab.keeper.upstream import UpstreamConnectError, UpstreamTimeout
from dslab.ring import ConsistentHashRing

NAMES = ["Server1", "Server2", "Server3", "Server4"]
RID = 424242


def ring() -> ConsistentHashRing:
    return ConsistentHashRing(hashes="blake2b", servers=NAMES)


def run(coro):
    return asyncio.run(coro)


def scripted(failing: set[str], calls: list[str]):
    async def fetch(name: str) -> str:
        calls.append(name)
        if name in failing:
            raise UpstreamConnectError(f"{name} refused")
        return f"answer from {name}"
    return fetch


def test_the_owner_answers_when_healthy():
    r, calls = ring(), []
    name, answer = run(route(RID, r, scripted(set(), calls)))
    assert name == r.lookup(RID) and calls == [name] and answer == f"answer from {name}"


def test_a_failing_owner_falls_over_to_the_next_server_clockwise():
    r, calls, reported = ring(), [], []
    order = list(r.walk(RID))
    name, _ = run(route(RID, r, scripted({order[0]}, calls),
                        lambda n, exc: reported.append(n)))
    assert name == order[1] and calls == order[:2] and reported == [order[0]]


def test_gives_up_after_max_attempts_with_every_failure_listed():
    r, calls = ring(), []
    with pytest.raises(NoReplicaAvailable) as err:
        run(route(RID, r, scripted(set(NAMES), calls), max_attempts=3))
    assert calls == list(r.walk(RID))[:3]
    assert [n for n, _ in err.value.failures] == calls


def test_an_empty_ring_is_no_replica_available():
    with pytest.raises(NoReplicaAvailable, match="no replica on the ring"):
        run(route(RID, ConsistentHashRing(), scripted(set(), [])))


def test_a_replica_removed_during_the_first_try_is_not_tried_again():
    r, calls = ring(), []
    owner = r.lookup(RID)

    async def fetch(name: str) -> str:
        calls.append(name)
        if name == owner:
            r.remove(owner)  # the heartbeat monitor took it off the ring meanwhile
            raise UpstreamTimeout("no answer")
        return name

    name, _ = run(route(RID, r, fetch))
    assert name != owner and calls.count(owner) == 1


def test_other_exceptions_are_not_swallowed():
    async def fetch(name: str) -> str:
        raise KeyError(name)

    with pytest.raises(KeyError):
        run(route(RID, ring(), fetch))


def test_a_given_order_is_tried_instead_of_the_walk():
    """Bounded loads hand ``route`` their own order: it is followed, failures included."""
    r, calls, reported = ring(), [], []
    order = list(reversed(list(r.walk(RID))))
    name, _ = run(route(RID, r, scripted({order[0]}, calls), lambda n, exc: reported.append(n),
                        order=iter(order)))
    assert name == order[1] and calls == order[:2] and reported == [order[0]]
    with pytest.raises(NoReplicaAvailable):
        run(route(RID, r, scripted(set(NAMES), []), order=iter(order), max_attempts=2))
