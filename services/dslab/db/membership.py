"""Which shard servers the database has, and keeping them: /init, /status, /add, /rm, a
restart of the balancer, and the keeper's hooks for replacing a dead server.

Configuration changes are saved in the metadata before they are adopted: a failure leaves
memory, /status and the metadata as they were, and the servers it started are retired.

A dead server (found by heartbeats, or evicted by a write) is replaced by a server with a
random name that gets the same shards (``hand_over``), each refilled from a live replica
before it joins the shard's ring (``recovery.py``, which also brings back a shard whose
servers all died).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from ..common.errors import ApiError, BadRequest, Conflict, NotFound, Unavailable
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
from ..supervisor import Replica
from .locks import ShardLocks
from .metadata import ClusterConfig, Metadata
from .placement import least_replicated, place_randomly, servers_of
from .recovery import ShardRecovery
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
        self.recovery = ShardRecovery(state, metadata, servers, locks)
        self.keeper: ReplicaKeeper  # set by ``bind``: the cluster makes the keeper after us
        # newcomers' configuration (/config), from their start until they are adopted
        self._starting: dict[str, tuple[Schema, list[str]]] = {}
        # --replication majority: a shard's dead members when it lost its majority (they are
        # started again in place; no set without them can be elected). all: none ever.
        self.quorum_lost: Callable[[str], list[str]] = lambda shard: []
        self.recovery.quorum_lost = lambda shard: self.quorum_lost(shard)

    def bind(self, keeper: ReplicaKeeper) -> None:
        self.keeper = self.recovery.keeper = keeper

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
            await self.recovery.catch_up()
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
                                await self.recovery.refill(name, shard, fresh=True)
                await self.metadata.add(new_shards, placement)
            except BaseException:
                await self.keeper.retire(list(placement))
                raise
            # Saved: now the new shards exist, with their servers.
            state.shardmap = shardmap
            for new in new_ids:
                state.rings[new] = state.new_ring(new)
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
        orphaned = [s for s in self.state.placement[dead]
                    if not len(self.state.rings[s]) or self.quorum_lost(s)]
        if orphaned:  # nothing to copy from: a new empty replica would pass for the data
            raise Unavailable(f"<Error> No live replica of {', '.join(orphaned)} to copy from")

    async def hand_over(self, dead: str, newcomer: Replica) -> None:
        """The newcomer gets the dead server's shards: refilled, saved, then adopted."""
        state = self.state
        shards = state.placement[dead]
        for shard in shards:
            async with self.locks.hold([shard]):
                await self.recovery.refill(newcomer.name, shard, fresh=True)
        await self.metadata.replace_server(dead, newcomer.name, shards)
        del state.placement[dead]
        state.placement[newcomer.name] = list(shards)
        for shard in shards:
            state.in_sync[shard].discard(dead)
            state.in_sync[shard].add(newcomer.name)
        self._starting.pop(newcomer.name, None)

    async def upkeep(self) -> None:
        await self.recovery.revive_dead_shards()
