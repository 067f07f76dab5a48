"""Which server is each shard's primary, under ``--replication majority``: elected on first
use, and again whenever the one known is lost or the shard's live servers changed.

The balancer is the only elector and the only router, so its view is the one that counts: it
sends a shard's changes and linearizable reads only to the primary it appointed last, and it
appoints a new one only through an election whose promises fence the old one off (no entry
of an older term is accepted by a majority again). The member set of a term is the shard's
live servers when it was elected; when the heartbeats evict one, or a replacement joins, the
next use elects again over the new set (a replica set's members are fixed per term).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from ..common.errors import Unavailable
from ..keeper.upstream import UpstreamPool
from ..replication.transport import HttpTransport
from .shardmanager import ShardManager, Terms

__all__ = ["Primaries"]

log = logging.getLogger(__name__)


class Primaries:
    def __init__(self, terms: Terms, live: Callable[[str], list[str]],
                 pool_of: Callable[[str], UpstreamPool | None], timeout: float,
                 on_election: Callable[[str, str, int, float], None] | None = None) -> None:
        """``live(shard)``: the shard's live servers; ``pool_of(name)``: where one listens;
        ``on_election(shard, primary, term, seconds)``: for the metrics."""
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
            members = self._addresses(shard)
            started = time.monotonic()
            primary = await manager.elect(members)
            self._members[shard] = tuple(sorted(members))
            if self.on_election is not None:
                self.on_election(shard, primary, manager.term, time.monotonic() - started)
            return primary

    def lost(self, shard: str, name: str) -> None:
        """``name`` failed as the shard's primary: the next use elects again."""
        manager = self._managers.get(shard)
        if manager is not None and manager.primary == name:
            log.info("%s: primary %s lost; electing again on next use", shard, name)
            manager.primary = None

    def _addresses(self, shard: str) -> Mapping[str, str]:
        members = {}
        for name in self.live(shard):
            pool = self.pool_of(name)
            if pool is not None:
                members[name] = f"{pool.host}:{pool.port}"
        if not members:
            raise Unavailable(f"<Error> No live server of {shard} to elect a primary from")
        return members

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()
