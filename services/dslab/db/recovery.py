"""Bringing shard servers in step: a refill from a live replica, and a shard whose servers all
died brought back on its own data.

A refill (``refill``) copies a shard's rows (GET /copy) from a live replica to a server and
only then lets it join the shard's ring; its caller holds the shard's lock, so no write can
slip between the copy and the join.

Every shard keeps its *in-sync* servers: those that applied every acknowledged write. When
every server of a shard has died, nothing is left to copy from: the dead in-sync servers are
started again in place, on their own data (``revive_dead_shards``); the first becomes the
source, the writes that were sent to it unanswered and never acknowledged are erased from it,
and the others are made equal to it (``catch_up``) before the shard takes reads and writes
again. A server evicted earlier, which missed later writes, is never the source.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ..common.errors import ApiError
from ..common.limits import MAX_ROWS, chunks
from ..keeper.keeper import ReplicaKeeper
from ..supervisor import SupervisorError
from .locks import ShardLocks
from .metadata import Metadata
from .servers import ShardServers
from .state import ClusterState

__all__ = ["ShardRecovery"]

log = logging.getLogger(__name__)


class ShardRecovery:
    def __init__(self, state: ClusterState, metadata: Metadata, servers: ShardServers,
                 locks: ShardLocks) -> None:
        self.state = state
        self.metadata = metadata
        self.servers = servers
        self.locks = locks
        self.keeper: ReplicaKeeper  # bound with the membership's (``ShardMembership.bind``)
        # (phase, seconds) of a revival: "restart" until the first server is back, "serving"
        # until a dead shard serves again; the metrics' (``ShardCluster``)
        self.observe: Callable[[str, float], None] = lambda phase, seconds: None
        # --replication all: a joining server gets the rows copied (None here). majority: the
        # shard's log brings it up to date (a copy replayed under the log would not give the
        # same rows): this joins it, (shard, name)
        self.join_by_log: Callable[[str, str], Awaitable[None]] | None = None
        # majority: a shard's dead members when it lost its majority (``ShardMembership``)
        self.quorum_lost: Callable[[str], list[str]] = lambda shard: []

    async def revive_dead_shards(self) -> list[str]:
        """For every shard with no live replica: start its dead in-sync servers again in place,
        on their own data. The first to come back joins the ring (it is the source); the other
        revived servers are made equal to the ring, on every shard they hold. Returns the names
        that serve again."""
        state = self.state
        wanted: list[str] = []
        for shard, ring in state.rings.items():
            lost = [n for n in self.quorum_lost(shard) if n in state.placement]
            if len(ring) and not lost:
                continue
            # majority: the dead members, on their journaled logs; all: the in-sync servers
            candidates = sorted(lost or (n for n in state.in_sync[shard] if n in state.placement))
            if not candidates:
                self.keeper.log_once(shard, f"shard {shard} has no in-sync server left: "
                                            "its data is lost")
                continue
            wanted += [name for name in candidates if name not in wanted]
        if not wanted:
            return []
        # All at once: a start is mostly waiting (imports, an engine's recovery), so three in
        # parallel take about as long as one; each dead shard serves again as soon as its
        # first in-sync server is back (the source), the others catch up after.
        started = time.monotonic()
        revived: list[str] = []
        for outcome in asyncio.as_completed([self._restart(name) for name in wanted]):
            name = await outcome
            if name is None:
                continue
            if not revived:
                self.observe("restart", time.monotonic() - started)
            revived.append(name)
            for shard in state.placement[name]:
                ring = state.rings[shard]
                if self.join_by_log is not None:  # its log is on its journal: it rejoins as
                    ring.add(name)  # it is, and the shard's next election sorts the logs out
                    continue
                if not len(ring) and name in state.in_sync[shard]:
                    async with self.locks.hold([shard]):
                        ring.add(name)
                        await self._recount(shard)
                    self.observe("serving", time.monotonic() - started)
                    log.warning("%s serves again from %s, %.1fs after its restart began",
                                shard, name, time.monotonic() - started)
        if revived:
            await self.catch_up()
        return revived

    async def _restart(self, name: str) -> str | None:
        try:
            await self.keeper.restart_in_place(name)
        except (ApiError, SupervisorError) as exc:
            self.keeper.log_once(name, f"restarting {name} in place failed, will retry: {exc}")
            return None
        log.warning("server %s started again in place", name)
        return name

    async def catch_up(self) -> None:
        """Every live server that holds a shard but is off its ring (started again, or back
        from a restart of the balancer) is made equal to the ring's replicas and joins it."""
        state = self.state
        for name, shard_ids in list(state.placement.items()):
            if self.keeper.pool(name) is None or self.keeper.is_evicted(name):
                continue
            for shard in shard_ids:
                ring = state.rings[shard]
                if name not in ring and len(ring):
                    async with self.locks.hold([shard]):
                        await self.refill(name, shard, fresh=False)
                    await self._save_in_sync(shard)

    async def _recount(self, shard: str) -> None:
        """valid_idx of a shard started again: the rows its source holds, once the writes that
        were sent to it unanswered and never acknowledged (``in_doubt``) are erased from it. (A
        write in flight when the balancer itself died may still be there: ``in_doubt`` lives
        in memory.)"""
        state = self.state
        doubt = sorted(state.in_doubt.pop(shard, set()))
        for source in state.rings[shard].servers:  # writes it may have applied unanswered
            await self._erase(source, shard, doubt)
        rows = (await self.servers.ask_one(shard, state.rings[shard], "GET", "/copy",
                                           {"shards": [shard]}))[shard]
        if len(rows) != state.valid_idx[shard]:
            log.warning("%s: %d rows after the restart, %d acknowledged", shard, len(rows),
                        state.valid_idx[shard])
        state.valid_idx[shard] = len(rows)
        state.in_sync[shard] = set(state.rings[shard].servers)
        await self.metadata.set_shard_state(shard, valid_idx=len(rows),
                                            in_sync=list(state.in_sync[shard]))

    async def _save_in_sync(self, shard: str) -> None:
        """After a server joined the shard's ring in step (a refill): it is in sync too."""
        members = set(self.state.rings[shard].servers)
        if members and members != self.state.in_sync[shard]:
            await self.metadata.set_shard_state(shard, in_sync=list(members))
            self.state.in_sync[shard] = members

    async def refill(self, target: str, shard: str, *, fresh: bool) -> None:
        """Make ``target``'s copy of ``shard`` equal to a live replica's (GET /copy), then let
        it join the shard's ring. ``fresh``: the target holds nothing yet. The caller holds the
        shard's lock. With ``join_by_log`` it joins as it is, and the shard's log brings it up
        to date."""
        ring = self.state.rings[shard]
        if self.join_by_log is not None:
            ring.add(target)
            await self.join_by_log(shard, target)
            return
        rows = (await self.servers.ask_one(shard, ring, "GET", "/copy",
                                           {"shards": [shard]}))[shard]
        if not fresh:
            held = (await self.servers.call(target, "GET", "/copy", {"shards": [shard]}))[shard]
            keep = {r["Stud_id"] for r in rows}
            extra = [r["Stud_id"] for r in held if r["Stud_id"] not in keep]
            await self._erase(target, shard, extra)
        copied = 0
        for chunk in chunks(rows):  # each within a shard server's body limit
            await self.servers.call(target, "POST", "/write",  # rows it held are replaced
                                    {"shard": shard, "curr_idx": copied, "data": chunk})
            copied += len(chunk)
        ring.add(target)
        log.info("%s holds %s: %d rows copied", target, shard, len(rows))

    async def _erase(self, name: str, shard: str, stud_ids: list[int]) -> None:
        """Erase ``stud_ids`` from ``name``'s copy of ``shard``, a request's worth at a time."""
        for k in range(0, len(stud_ids), MAX_ROWS):
            await self.servers.call(name, "POST", "/erase",
                                    {"shard": shard, "Stud_ids": stud_ids[k:k + MAX_ROWS]})
