"""Which server is each shard's primary, under ``--replication majority``: elected on first
use, and again whenever the one known is lost or the shard's live servers changed.

The balancer is the only elector and the only router, so its view is the one that counts: it
sends a shard's changes and linearizable reads only to the primary it appointed last, and it
appoints a new one only through an election whose promises fence the old one off (no entry
of an older term is accepted by a majority again). The member set of a term is the shard's
live servers when it was elected; when the heartbeats evict one, or a replacement joins, the
next use elects again over the new set (a replica set's members are fixed per term).

**One server at a time** (Raft dissertation section 4.1). If the set went from {A, B, C} to
{A, B, D} at once, a write committed on {A, C} could be lost: {B, D} is a majority of the new
set, and neither holds it. So the sets are stepped through, removals first, one change per
election, and each new primary's no-op is committed (its first read answered) before the
next change: then every majority of the next set meets every majority of the last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from ..common.errors import ApiError, Unavailable
from ..keeper.upstream import UpstreamError, UpstreamPool
from ..replication import majority
from ..replication.transport import HttpTransport
from .shardmanager import ShardManager, Terms

__all__ = ["Primaries", "steps"]

log = logging.getLogger(__name__)


class Primaries:
    def __init__(self, terms: Terms, live: Callable[[str], list[str]],
                 pool_of: Callable[[str], UpstreamPool | None], timeout: float,
                 settle: Callable[[str, str], Awaitable[object]],
                 on_election: Callable[[str, str, int, float], None] | None = None) -> None:
        """``live(shard)``: the shard's live servers; ``pool_of(name)``: where one listens;
        ``settle(shard, primary)``: returns once the new primary committed its no-op;
        ``on_election(shard, primary, term, seconds)``: for the metrics."""
        self.settle = settle
        self.terms = terms
        self.live = live
        self.pool_of = pool_of
        self.timeout = timeout
        self.on_election = on_election
        self._managers: dict[str, ShardManager] = {}
        self._members: dict[str, tuple[str, ...]] = {}  # of the last election, per shard
        self._transports: dict[str, HttpTransport] = {}
        self._electing: dict[str, asyncio.Lock] = {}

    def manager(self, shard: str) -> ShardManager:
        manager = self._managers.get(shard)
        if manager is None:
            transport = self._transports[shard] = HttpTransport(shard, self.timeout)
            manager = self._managers[shard] = ShardManager("balancer", shard, self.terms,
                                                           transport)
        return manager

    def known(self, shard: str) -> str | None:
        """The primary appointed last, if the shard's live servers are still its members."""
        manager = self._managers.get(shard)
        if manager is None or manager.primary is None:
            return None
        if tuple(sorted(self.live(shard))) != self._members.get(shard):
            return None
        return manager.primary

    async def primary(self, shard: str) -> str:
        """The shard's primary, elected now if none is known (a 503 if no majority answers)."""
        primary = self.known(shard)
        if primary is not None:
            return primary
        manager = self.manager(shard)
        async with self._electing.setdefault(shard, asyncio.Lock()):
            # one election at a time; those who waited use its result
            primary = self.known(shard)
            if primary is not None:
                return primary
            for members in steps(self._members.get(shard), sorted(self.live(shard))):
                primary = await self._elect(shard, manager, members)
            assert primary is not None
            return primary

    async def _elect(self, shard: str, manager: ShardManager, members: tuple[str, ...]) -> str:
        addresses = self._addresses(shard, members)
        started = time.monotonic()
        primary = await manager.elect(addresses)
        try:
            await self.settle(shard, primary)
        except (ApiError, UpstreamError, OSError) as exc:
            manager.primary = None
            raise Unavailable(f"<Error> {primary}, just elected primary of {shard}, failed: "
                              f"{exc}") from None
        self._members[shard] = members
        if self.on_election is not None:
            self.on_election(shard, primary, manager.term, time.monotonic() - started)
        return primary

    def quorum_lost(self, shard: str) -> list[str]:
        """The members of the shard's last election that are not live, when the live ones are
        fewer than a majority of it: no set without them can be elected (a write committed on
        them may be on no one else), so they must be started again on their data."""
        members = self._members.get(shard)
        if not members:
            return []
        live = set(self.live(shard))
        if sum(1 for m in members if m in live) >= majority(len(members)):
            return []
        return [m for m in members if m not in live]

    def lost(self, shard: str, name: str) -> None:
        """``name`` failed as the shard's primary: the next use elects again."""
        manager = self._managers.get(shard)
        if manager is not None and manager.primary == name:
            log.info("%s: primary %s lost; electing again on next use", shard, name)
            manager.primary = None

    def _addresses(self, shard: str, names: tuple[str, ...]) -> Mapping[str, str | None]:
        """Where each member listens; None for a member no longer started: it is still a
        member, which does not answer and counts against the majority."""
        if not names:
            raise Unavailable(f"<Error> No live server of {shard} to elect a primary from")
        members: dict[str, str | None] = {}
        for name in names:
            pool = self.pool_of(name)
            members[name] = f"{pool.host}:{pool.port}" if pool is not None else None
        return members

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()


def steps(last: tuple[str, ...] | None, live: list[str]) -> list[tuple[str, ...]]:
    """The member sets from ``last`` (the last election's; None: no election yet) to ``live``,
    one server removed or added at a time, removals first."""
    if last is None or not last:
        return [tuple(live)]
    current = list(last)
    out = []
    for gone in [n for n in last if n not in live]:
        if len(current) == 1:
            break  # the last member goes only when another comes
        current.remove(gone)
        out.append(tuple(current))
    for new in [n for n in live if n not in current]:
        current = sorted([*current, new])
        out.append(tuple(current))
    for gone in [n for n in current if n not in live]:
        current.remove(gone)
        out.append(tuple(current))
    return out or [tuple(live)]
