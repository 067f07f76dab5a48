"""Which shard servers the database has, and keeping them: /init, /status, /add, /rm, a
restart of the balancer, and the keeper's hooks for replacing a dead server.

Configuration changes are saved in the metadata before they are adopted: a failure leaves
memory, /status and the metadata as they were, and the servers it started are retired.

A dead server (found by heartbeats, or evicted by a write) is replaced by a server with a
random name that gets the same shards (``hand_over``): for each shard, under that shard's
lock, its rows are copied (GET /copy) from a live replica and written to the newcomer, and
only then does it join the shard's ring, so no write can slip between the copy and the join.

Every shard keeps its *in-sync* servers: those that applied every acknowledged write. When
every server of a shard has died, nothing is left to copy from: the dead in-sync servers are
started again in place, on their own data (``upkeep``); the first becomes the source and the
others are made equal to it before the shard takes reads and writes again. A server evicted
earlier, which missed later writes, is never the source.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Any

from ..common.errors import ApiError, BadRequest, Conflict, NotFound, Unavailable
from ..common.limits import MAX_ROWS, chunks
from ..contract.studdb import (
    ADD_N_TOO_SMALL,
    RM_TOO_MANY,
    AddRequest,
    InitRequest,
    RmRequest,
    Schema,
    expand_template,
    is_template,
)
from ..keeper.keeper import ReplicaKeeper, Tenant
from ..supervisor import Replica, SupervisorError
from .locks import ShardLocks
from .metadata import ClusterConfig, Metadata
from .placement import least_replicated, place_randomly, servers_of
from .servers import ShardServers
from .shardmap import Shard, ShardMap, ShardOverlap
from .state import ClusterState

__all__ = ["ShardMembership"]

log = logging.getLogger(__name__)


class ShardMembership(Tenant):
    def __init__(self, state: ClusterState, metadata: Metadata, servers: ShardServers,
                 locks: ShardLocks, rng: random.Random) -> None:
        self.state = state
        self.metadata = metadata
        self.servers = servers
        self.locks = locks
        self.rng = rng
        self.keeper: ReplicaKeeper  # set by the cluster, which makes both
        # newcomers' configuration (/config), from their start until they are adopted
        self._starting: dict[str, tuple[Schema, list[str]]] = {}

    # ---- a restart of the balancer --------------------------------------------------------------
    async def load(self) -> None:
        """Load the metadata; if the database was configured, start its servers again. Each
        shard's in-sync servers join its ring; any other holder is first made equal to them."""
        config = await self.metadata.load()
        if config is None:
            return
        async with self.keeper.lock:
            await self._start_servers(config.placement, config.schema, keep_data=True)
            self.state.adopt(config)
            for name, shard_ids in config.placement.items():
                for shard in shard_ids:
                    if name in self.state.in_sync[shard]:
                        self.state.rings[shard].add(name)
            await self._catch_up()
        log.info("configuration found: %d shards on %s", len(config.shards),
                 ", ".join(config.placement))

    async def _start_servers(self, placement: dict[str, list[str]], schema: Schema, *,
                             keep_data: bool = False) -> None:
        """Start and /config every server of ``placement``, or none (the keeper's rule)."""
        self._starting.update({name: (schema, shards) for name, shards in placement.items()})
        try:
            await self.keeper.start_all(list(placement), keep_data=keep_data)
        finally:
            for name in placement:
                self._starting.pop(name, None)

    # ---- configuration (POST /init, GET /status, POST /add, DELETE /rm) -----------------------
    def status(self) -> dict[str, Any]:
        state = self.state
        if state.schema is None:
            raise NotFound("<Error> The database is not configured: POST /init first")
        return {
            "N": len(state.placement),
            "schema": state.schema.model_dump(),
            "shards": [s.as_config() for s in state.shardmap.shards],
            "servers": {name: list(shards) for name, shards in state.placement.items()},
        }

    async def init(self, request: InitRequest) -> None:
        async with self.keeper.lock:
            if self.state.schema is not None:
                raise Conflict("<Error> The database is already configured (see GET /status); "
                               "restart the balancer with --reset to start over")
            try:
                shardmap = ShardMap(Shard(s.Stud_id_low, s.Shard_id, s.Shard_size)
                                    for s in request.shards)
            except ShardOverlap as exc:
                raise BadRequest(f"<Error> {exc}") from None
            if request.servers is None:
                names = [f"Server{k}" for k in range(request.N)]
                replicas = request.replicas or min(3, request.N)
                placement = place_randomly([s.shard_id for s in shardmap.shards], names,
                                           replicas, self.rng)
            else:
                placement = self._expand_names(request.servers)
            config = ClusterConfig(request.schema_, shardmap.shards, placement)
            await self._start_servers(placement, request.schema_)
            try:
                await self.metadata.save(config)
            except BaseException:
                await self.keeper.retire(list(placement))
                with contextlib.suppress(ApiError):
                    await self.metadata.reset()
                raise
            self.state.adopt(config)
            for name, shard_ids in placement.items():
                for shard in shard_ids:
                    self.state.rings[shard].add(name)

    def _expand_names(self, servers: dict[str, list[str]]) -> dict[str, list[str]]:
        placement: dict[str, list[str]] = {}
        taken = {n.lower() for n in self.state.placement}
        for name, shard_ids in servers.items():
            if is_template(name):
                real = self._random_name(name)
                while real.lower() in {p.lower() for p in placement}:
                    real = self._random_name(name)
            else:
                real = name
            if real.lower() in taken or real.lower() in {p.lower() for p in placement}:
                raise BadRequest(f"<Error> Server {name} already exists")
            placement[real] = list(shard_ids)
        return placement

    def _random_name(self, template: str = "Server[x]") -> str:
        taken = {n.lower() for n in self.state.placement}
        while True:
            name = expand_template(template, self.rng.randint(10000, 99999))
            if name.lower() not in taken:
                return name

    async def add(self, request: AddRequest) -> tuple[int, list[str]]:
        if request.n < len(request.servers):
            raise BadRequest(ADD_N_TOO_SMALL)
        state = self.state
        async with self.keeper.lock:
            schema = state.require_config()
            new_shards = [Shard(s.Stud_id_low, s.Shard_id, s.Shard_size) for s in request.new_shards]
            try:
                shardmap = state.shardmap.with_shards(new_shards)
            except ShardOverlap as exc:
                raise BadRequest(f"<Error> {exc}") from None
            placement = self._expand_names(request.servers)
            for name, shard_ids in placement.items():
                unknown = [s for s in shard_ids if s not in shardmap]
                if unknown:
                    raise BadRequest(f"<Error> {name} is placed on unknown shard(s): "
                                     f"{', '.join(unknown)}")
            unplaced = [s.shard_id for s in new_shards if not servers_of(placement, s.shard_id)]
            if unplaced:
                raise BadRequest(f"<Error> New shard(s) placed on no server: {', '.join(unplaced)}")
            existing_ids = [s.shard_id for s in state.shardmap.shards]
            for _ in range(request.n - len(placement)):
                shard = least_replicated({**state.placement, **placement}, existing_ids
                                         or [s.shard_id for s in new_shards])
                placement[self._random_name()] = [shard]
            await self._start_servers(placement, schema)
            new_ids = {s.shard_id for s in new_shards}
            try:  # existing shards: refilled under their locks, joining their rings at once
                for name, shard_ids in placement.items():
                    for shard in shard_ids:
                        if shard not in new_ids:
                            async with self.locks.hold([shard]):
                                await self.refill(name, shard, fresh=True)
                await self.metadata.add(new_shards, placement)
            except BaseException:
                await self.keeper.retire(list(placement))
                raise
            # Saved: now the new shards exist, with their servers.
            state.shardmap = shardmap
            for new in new_ids:
                state.rings[new] = state.new_ring()
                state.valid_idx[new] = 0
                state.in_sync[new] = set()
            for name, shard_ids in placement.items():
                for shard in shard_ids:
                    state.in_sync[shard].add(name)
                    if shard in new_ids:
                        state.rings[shard].add(name)
            state.placement.update(placement)
            return len(state.placement), list(placement)

    async def rm(self, request: RmRequest) -> tuple[int, list[str]]:
        if len(request.servers) > request.n:
            raise BadRequest(RM_TOO_MANY)
        state = self.state
        async with self.keeper.lock:
            by_lower = {name.lower(): name for name in state.placement}
            unknown = [n for n in request.servers if n.lower() not in by_lower]
            if unknown:
                raise BadRequest(f"<Error> Server(s) do not exist: {', '.join(unknown)}")
            if request.n > len(state.placement):
                raise BadRequest(f"<Error> Cannot remove {request.n} server(s): only "
                                 f"{len(state.placement)} exist")
            chosen = [by_lower[n.lower()] for n in request.servers]
            others = [n for n in state.placement if n not in chosen]
            self.rng.shuffle(others)
            for name in others:  # random extras, never the last replica of a shard
                if len(chosen) == request.n:
                    break
                if state.safe_to_remove([*chosen, name]):
                    chosen.append(name)
            if len(chosen) < request.n or not state.safe_to_remove(chosen):
                raise BadRequest(f"<Error> Removing {request.n} server(s) "
                                 f"({', '.join(chosen)}) would leave a shard without a replica")
            shards = {s for name in chosen for s in state.placement[name]}
            async with self.locks.hold(shards):  # writes in flight finish first
                await self.metadata.remove_servers(chosen)
                for name in chosen:
                    state.leave_rings(name)
            await self.keeper.retire(chosen)
            for name in chosen:
                for shard in state.placement.pop(name):
                    state.in_sync[shard].discard(name)
            return len(state.placement), chosen

    # ---- the keeper's hooks ---------------------------------------------------------------------
    async def prepare(self, replica: Replica) -> None:
        """A server just started: /config it with the schema and its shards."""
        schema, shards = self._starting.get(replica.name) or (
            self.state.require_config(), self.state.placement[replica.name])
        await self.servers.call(replica.name, "POST", "/config",
                                {"schema": schema.model_dump(), "shards": shards})

    def leave(self, name: str) -> None:
        self.state.leave_rings(name)
        self._starting.pop(name, None)

    def wanted(self, name: str) -> bool:
        return name in self.state.placement  # not removed by /rm meanwhile

    def name_replacement(self, dead: str, taken: Sequence[str]) -> str:
        name = self._random_name()
        self._starting[name] = (self.state.require_config(), list(self.state.placement[dead]))
        return name

    def check_replaceable(self, dead: str) -> None:
        orphaned = [s for s in self.state.placement[dead] if not len(self.state.rings[s])]
        if orphaned:  # nothing to copy from: a new empty replica would pass for the data
            raise Unavailable(f"<Error> No live replica of {', '.join(orphaned)} to copy from")

    async def hand_over(self, dead: str, newcomer: Replica) -> None:
        """The newcomer gets the dead server's shards: refilled, saved, then adopted."""
        state = self.state
        shards = state.placement[dead]
        for shard in shards:
            async with self.locks.hold([shard]):
                await self.refill(newcomer.name, shard, fresh=True)
        await self.metadata.replace_server(dead, newcomer.name, shards)
        del state.placement[dead]
        state.placement[newcomer.name] = list(shards)
        for shard in shards:
            state.in_sync[shard].discard(dead)
            state.in_sync[shard].add(newcomer.name)
        self._starting.pop(newcomer.name, None)

    async def upkeep(self) -> None:
        await self._revive_dead_shards()

    # ---- shards whose servers all died ------------------------------------------------------------
    async def _revive_dead_shards(self) -> list[str]:
        """For every shard with no live replica: start its dead in-sync servers again in place,
        on their own data. The first to come back joins the ring (it is the source); the other
        revived servers are made equal to the ring, on every shard they hold. Returns the names
        that serve again."""
        state = self.state
        revived: list[str] = []
        for shard, ring in state.rings.items():
            if len(ring):
                continue
            candidates = sorted(n for n in state.in_sync[shard] if n in state.placement)
            if not candidates:
                self.keeper.log_once(shard, f"shard {shard} has no in-sync server left: "
                                            "its data is lost")
                continue
            for name in candidates:
                if name in revived:
                    continue
                try:
                    await self.keeper.restart_in_place(name)
                except (ApiError, SupervisorError) as exc:
                    self.keeper.log_once(name, f"restarting {name} in place failed, "
                                               f"will retry: {exc}")
                    continue
                revived.append(name)
                log.warning("server %s started again in place for %s", name, shard)
        for name in revived:  # sources first: each dead shard's first in-sync server
            for shard in state.placement[name]:
                ring = state.rings[shard]
                if not len(ring) and name in state.in_sync[shard]:
                    async with self.locks.hold([shard]):
                        ring.add(name)
                        await self._recount(shard)
        if revived:
            await self._catch_up()
        return revived

    async def _catch_up(self) -> None:
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
        shard's lock."""
        ring = self.state.rings[shard]
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
