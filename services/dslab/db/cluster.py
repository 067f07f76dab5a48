"""The sharded database behind the Part 2 balancer: shard servers, per-shard rings, metadata.

State, and who may change it:

* ``servers`` (name -> its upstream pool) and ``placement`` (name -> its shards) change only
  under ``_membership`` (/init, /add, /rm, replacing a dead server);
* every shard has a ``ConsistentHashRing`` of the live servers that hold it. Reads pick a
  replica from it (a random request id, so reads spread over replicas) and fail over along it;
* writes, updates and deletes of a shard run under that shard's lock (``ShardLocks``) and go
  to every server on the shard's ring. A server that fails one is *evicted* at once: it leaves
  every ring before the write is acknowledged, so replicas that answer never disagree.
  Acknowledged means every live replica holds the row (journaled).

A server found dead (by heartbeats, or evicted by a write) is replaced by a new server with a
random name that gets the same shards: for each shard, under that shard's lock, its rows are
copied (GET /copy) from a live replica, written to the newcomer, and only then does it join the
shard's ring, so no write can slip between the copy and the join.

Liveness is the transport's and the heartbeats' call, never a request's: a replica that
refuses a write that the others applied is out of step and evicted; a write that every replica
refuses is the request's fault, and nobody is evicted (``fanout``).

Every shard keeps its *in-sync* servers (``in_sync``, saved beside valid_idx before a write is
acknowledged): those that applied every acknowledged write. When every server of a shard has
died, nothing is left to copy from: the dead in-sync servers are started again in place, on
their own data, the first becomes the source and the others are made equal to it, and only then
does the shard take reads and writes again. A server evicted earlier, which missed later writes,
is never the source.

Configuration changes (/init, /add, /rm, a replacement) are saved in the metadata before they
are adopted: a failure leaves memory, /status and the metadata as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..common.errors import ApiError, BadRequest, Conflict, NotFound, Unavailable
from ..common.limits import MAX_ROWS
from ..contract.studdb import (
    ADD_N_TOO_SMALL,
    RM_TOO_MANY,
    AddRequest,
    InitRequest,
    RmRequest,
    Schema,
    expand_template,
    is_template,
    validate_row,
)
from ..keeper.heartbeat import Dead, HeartbeatMonitor
from ..keeper.routing import NoReplicaAvailable, route
from ..keeper.upstream import UpstreamError, UpstreamPool, format_json_request
from ..ring import ConsistentHashRing
from ..supervisor import Replica, ReplicaSupervisor, SupervisorError, UnknownReplica
from .fanout import ServerRefused, classify
from .locks import ShardLocks
from .metadata import ClusterConfig, Metadata
from .placement import least_replicated, place_randomly, servers_of
from .shardmap import Shard, ShardMap, ShardOverlap

__all__ = ["ServerRefused", "ShardCluster"]

log = logging.getLogger(__name__)

_UNREACHABLE = (UpstreamError, OSError)


class ServerTrouble(UpstreamError):
    """A shard server answered 5xx to a read: for the router, try the next replica."""


class ShardCluster:
    def __init__(self, supervisor: ReplicaSupervisor, metadata: Metadata, *,
                 data_root: Path | None = None, hashes: str = "blake2b",
                 request_timeout: float = 30.0, heartbeat_interval: float = 0.25,
                 heartbeat_timeout: float = 1.0, heartbeat_misses: int = 3,
                 lock_timeout: float = 60.0, rng: random.Random | None = None) -> None:
        self.supervisor = supervisor
        self.metadata = metadata
        self.data_root = data_root
        self.hashes = hashes
        self.request_timeout = request_timeout
        self.rng = rng or random.Random()
        self.locks = ShardLocks(lock_timeout)
        self.monitor = HeartbeatMonitor(supervisor, self._after_heartbeats,
                                        interval=heartbeat_interval, timeout=heartbeat_timeout,
                                        misses=heartbeat_misses)
        self._membership = asyncio.Lock()
        self.schema: Schema | None = None
        self.shardmap = ShardMap()
        self.valid_idx: dict[str, int] = {}
        self.in_sync: dict[str, set[str]] = {}
        self.placement: dict[str, list[str]] = {}
        self.rings: dict[str, ConsistentHashRing] = {}
        self.servers: dict[str, UpstreamPool] = {}
        self._evicted: dict[str, str] = {}  # name -> why, for the next heartbeat round
        self._logged_failures: dict[str, str] = {}

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the metadata; if the database was configured, start its servers again. Each
        shard's in-sync servers join its ring; any other holder is first made equal to them."""
        config = await self.metadata.load()
        if config is not None:
            async with self._membership:
                await self._start_servers(config.placement, config.schema, keep_data=True)
                self._adopt(config)
                for name, shard_ids in config.placement.items():
                    for shard in shard_ids:
                        if name in self.in_sync[shard]:
                            self.rings[shard].add(name)
                await self._catch_up()
            log.info("configuration found: %d shards on %s", len(config.shards),
                     ", ".join(config.placement))
        self.monitor.start()

    async def close(self) -> None:
        await self.monitor.close()
        async with self._membership:
            for pool in self.servers.values():
                pool.close()
            self.servers.clear()
            await self.supervisor.close()

    def _adopt(self, config: ClusterConfig) -> None:
        self.schema = config.schema
        self.shardmap = ShardMap(config.shards)
        self.valid_idx = {s.shard_id: config.valid_idx.get(s.shard_id, 0) for s in config.shards}
        self.placement = {name: list(shards) for name, shards in config.placement.items()}
        self.in_sync = {s.shard_id: set(config.in_sync.get(s.shard_id, servers_of(
            config.placement, s.shard_id))) for s in config.shards}
        self.rings = {s.shard_id: self._new_ring() for s in config.shards}

    def _new_ring(self) -> ConsistentHashRing:
        return ConsistentHashRing(512, 9, self.hashes)

    # ---- talking to shard servers ---------------------------------------------------------------
    async def call(self, name: str, method: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One request to a shard server: its JSON answer, ``ServerRefused`` for any other
        status, an ``UpstreamError`` when it could not be reached."""
        pool = self.servers.get(name)
        if pool is None:
            raise ServerTrouble(f"{name} is not a live server")
        response = await pool.fetch(format_json_request(method, path, name,
                                                        json.dumps(payload).encode()))
        try:
            body = json.loads(response.body) if response.body else {}
        except ValueError:
            body = {"message": response.body[:200].decode("latin-1")}
        if response.status != 200:
            raise ServerRefused(name, response.status, str(body.get("message", "")))
        return body

    async def _call_routed(self, name: str, method: str, path: str,
                           payload: dict[str, Any]) -> dict[str, Any]:
        """``call`` for ``route``: a 5xx is the replica's trouble (try the next one); a 4xx is
        the request's fault and is the answer."""
        try:
            return await self.call(name, method, path, payload)
        except ServerRefused as exc:
            if exc.status >= 500:
                raise ServerTrouble(f"{name} answered {exc.status}: {exc.message}") from exc
            raise

    async def _ask_one(self, shard: str, method: str, path: str,
                       payload: dict[str, Any]) -> dict[str, Any]:
        """Ask one live replica of ``shard`` (failing over along its ring)."""
        async def ask(name: str) -> dict[str, Any]:
            return await self._call_routed(name, method, path, payload)
        try:
            _, answer = await route(self.rng.randint(0, 999999), self.rings[shard], ask,
                                    lambda name, exc: self.monitor.wake())
        except NoReplicaAvailable as exc:
            raise Unavailable(f"<Error> Shard {shard} has no live replica: {exc}") from None
        return answer

    async def _start_servers(self, placement: dict[str, list[str]], schema: Schema, *,
                             keep_data: bool = False) -> None:
        """Spawn and /config every server, or none: the started ones are stopped again, and
        their data removed unless ``keep_data`` (a restart in place, which finds its data)."""
        names = list(placement)
        results = await asyncio.gather(*(self.supervisor.spawn(n) for n in names),
                                       return_exceptions=True)
        started = [r for r in results if isinstance(r, Replica)]
        for replica in started:
            self.servers[replica.name] = UpstreamPool(replica.host, replica.port,
                                                      timeout=self.request_timeout)
        failure: BaseException | None = next(
            (r for r in results if isinstance(r, BaseException)), None)
        if failure is None:
            configured = await asyncio.gather(
                *(self.call(n, "POST", "/config", {"schema": schema.model_dump(),
                                                   "shards": placement[n]})
                  for n in names), return_exceptions=True)
            failure = next((r for r in configured if isinstance(r, BaseException)), None)
        if failure is not None:
            for replica in started:
                await self._stop_server(replica.name, remove_data=not keep_data)
            raise Unavailable(f"<Error> Could not start shard servers: {failure}") from failure
        for replica in started:
            self.monitor.watch(replica)

    async def _stop_server(self, name: str, *, remove_data: bool = False) -> None:
        self.monitor.unwatch(name)
        pool = self.servers.pop(name, None)
        if pool is not None:
            pool.close()
        try:
            await self.supervisor.remove(name)
        except UnknownReplica:
            pass
        if remove_data:
            await self._discard_data(name)

    async def _discard_data(self, name: str) -> None:
        """A server that is gone for good: its engine's data goes too (folder or volume)."""
        await self.supervisor.discard_data(name)
        if self.data_root is not None:
            shutil.rmtree(self.data_root / name, ignore_errors=True)

    async def _discard_new(self, names: Sequence[str]) -> None:
        """Undo servers started by a change that failed: off every ring, stopped, data gone."""
        for name in names:
            self._leave_rings(name)
        # in parallel: an engine takes seconds to shut down
        await asyncio.gather(*(self._stop_server(name, remove_data=True) for name in names))

    def _leave_rings(self, name: str) -> None:
        for ring in self.rings.values():
            if name in ring:
                ring.remove(name)

    def _evict(self, name: str, why: str) -> None:
        """Take a server out of every ring now; the monitor replaces it on its next round."""
        self._leave_rings(name)
        if name in self.servers and name not in self._evicted:
            log.warning("server %s evicted: %s", name, why)
            self._evicted[name] = why
            self.monitor.wake()

    def _random_name(self, template: str = "Server[x]") -> str:
        taken = {n.lower() for n in self.placement}
        while True:
            name = expand_template(template, self.rng.randint(10000, 99999))
            if name.lower() not in taken:
                return name

    # ---- failure: replace dead servers, or start a dead shard's servers again -------------------
    async def _after_heartbeats(self, dead: Dead) -> None:
        for name, why in dead:
            self._evict(name, why)
        if not self._evicted:
            return
        async with self._membership:
            await self._revive_dead_shards()
            for name, why in list(self._evicted.items()):
                if name not in self.placement:
                    del self._evicted[name]
                    continue
                try:
                    newcomer = await self._replace(name)
                except (ApiError, SupervisorError, UpstreamError) as exc:
                    self._log_once(name, f"replacing {name} failed, will retry: {exc}")
                    continue
                self._logged_failures.pop(name, None)
                del self._evicted[name]
                log.warning("server %s (%s) replaced by %s", name, why, newcomer)

    def _log_once(self, key: str, message: str) -> None:
        """A failure that repeats every heartbeat round is logged when it changes, not each time."""
        if self._logged_failures.get(key) != message:
            log.error("%s", message)
            self._logged_failures[key] = message

    async def _replace(self, dead: str) -> str:
        shards = self.placement[dead]
        if dead in self.servers:
            await self._stop_server(dead)
        orphaned = [shard for shard in shards if not len(self.rings[shard])]
        if orphaned:  # nothing to copy from: a new empty replica would pass for the data
            raise Unavailable(f"<Error> No live replica of {', '.join(orphaned)} to copy from")
        assert self.schema is not None
        newcomer = self._random_name()
        await self._start_servers({newcomer: shards}, self.schema)
        try:
            for shard in shards:
                async with self.locks.hold([shard]):
                    await self._sync(newcomer, shard, fresh=True)
            await self.metadata.replace_server(dead, newcomer, shards)
        except BaseException:
            await self._discard_new([newcomer])
            raise
        del self.placement[dead]
        self.placement[newcomer] = list(shards)
        for shard in shards:
            self.in_sync[shard].discard(dead)
            self.in_sync[shard].add(newcomer)
        await self._discard_data(dead)
        return newcomer

    async def _revive_dead_shards(self) -> list[str]:
        """For every shard with no live replica: start its dead in-sync servers again in place,
        on their own data. The first to come back joins the ring (it is the source); the other
        revived servers are made equal to the ring, on every shard they hold. Returns the names
        that serve again."""
        revived: list[str] = []
        for shard, ring in self.rings.items():
            if len(ring):
                continue
            candidates = sorted(n for n in self.in_sync[shard] if n in self.placement)
            if not candidates:
                self._log_once(shard, f"shard {shard} has no in-sync server left: its data is lost")
                continue
            for name in candidates:
                if name in revived:
                    continue
                if name in self.servers:
                    await self._stop_server(name)  # dead or hung: keep its data, not the process
                try:
                    assert self.schema is not None
                    await self._start_servers({name: self.placement[name]}, self.schema,
                                              keep_data=True)
                except (ApiError, SupervisorError) as exc:
                    self._log_once(name, f"restarting {name} in place failed, will retry: {exc}")
                    continue
                revived.append(name)
                self._evicted.pop(name, None)
                self._logged_failures.pop(name, None)
                log.warning("server %s started again in place for %s", name, shard)
        for name in revived:  # sources first: each dead shard's first in-sync server
            for shard in self.placement[name]:
                ring = self.rings[shard]
                if not len(ring) and name in self.in_sync[shard]:
                    async with self.locks.hold([shard]):
                        ring.add(name)
                        await self._recount(shard)
        if revived:
            await self._catch_up()
        return revived

    async def _catch_up(self) -> None:
        """Every live server that holds a shard but is off its ring (started again, or back
        from a restart of the balancer) is made equal to the ring's replicas and joins it."""
        for name, shard_ids in list(self.placement.items()):
            if name not in self.servers or name in self._evicted:
                continue
            for shard in shard_ids:
                ring = self.rings[shard]
                if name not in ring and len(ring):
                    async with self.locks.hold([shard]):
                        await self._sync(name, shard, fresh=False)
                    await self._save_in_sync(shard)

    async def _recount(self, shard: str) -> None:
        """valid_idx of a shard started again: the rows its source holds (a write that was in
        flight when every server died may or may not have reached it: it was never
        acknowledged, and the replicas are made to agree on the source)."""
        rows = (await self._ask_one(shard, "GET", "/copy", {"shards": [shard]}))[shard]
        if len(rows) != self.valid_idx[shard]:
            log.warning("%s: %d rows after the restart, %d acknowledged", shard, len(rows),
                        self.valid_idx[shard])
        self.valid_idx[shard] = len(rows)
        self.in_sync[shard] = set(self.rings[shard].servers)
        await self.metadata.set_shard_state(shard, valid_idx=len(rows),
                                            in_sync=list(self.in_sync[shard]))

    async def _save_in_sync(self, shard: str) -> None:
        """After a server joined the shard's ring in step (a refill): it is in sync too."""
        members = set(self.rings[shard].servers)
        if members and members != self.in_sync[shard]:
            await self.metadata.set_shard_state(shard, in_sync=list(members))
            self.in_sync[shard] = members

    async def _sync(self, target: str, shard: str, *, fresh: bool) -> None:
        """Make ``target``'s copy of ``shard`` equal to a live replica's (GET /copy), then let
        it join the shard's ring. ``fresh``: the target holds nothing yet. The caller holds the
        shard's lock."""
        rows = (await self._ask_one(shard, "GET", "/copy", {"shards": [shard]}))[shard]
        if not fresh:
            held = (await self.call(target, "GET", "/copy", {"shards": [shard]}))[shard]
            keep = {r["Stud_id"] for r in rows}
            extra = [r["Stud_id"] for r in held if r["Stud_id"] not in keep]
            for k in range(0, len(extra), MAX_ROWS):
                await self.call(target, "POST", "/erase",
                                {"shard": shard, "Stud_ids": extra[k:k + MAX_ROWS]})
        for k in range(0, len(rows), MAX_ROWS):  # upserts: rows it held are overwritten
            await self.call(target, "POST", "/write",
                            {"shard": shard, "curr_idx": k, "data": rows[k:k + MAX_ROWS]})
        self.rings[shard].add(target)
        log.info("%s holds %s: %d rows copied", target, shard, len(rows))

    # ---- configuration (POST /init, GET /status, POST /add, DELETE /rm) -----------------------
    def status(self) -> dict[str, Any]:
        if self.schema is None:
            raise NotFound("<Error> The database is not configured: POST /init first")
        return {
            "N": len(self.placement),
            "schema": self.schema.model_dump(),
            "shards": [s.as_config() for s in self.shardmap.shards],
            "servers": {name: list(shards) for name, shards in self.placement.items()},
        }

    async def init(self, request: InitRequest) -> None:
        async with self._membership:
            if self.schema is not None:
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
                await self._discard_new(list(placement))
                with contextlib.suppress(ApiError):
                    await self.metadata.reset()
                raise
            self._adopt(config)
            for name, shard_ids in placement.items():
                for shard in shard_ids:
                    self.rings[shard].add(name)

    def _expand_names(self, servers: dict[str, list[str]]) -> dict[str, list[str]]:
        placement: dict[str, list[str]] = {}
        taken = {n.lower() for n in self.placement}
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

    async def add(self, request: AddRequest) -> tuple[int, list[str]]:
        if request.n < len(request.servers):
            raise BadRequest(ADD_N_TOO_SMALL)
        async with self._membership:
            schema = self._require_config()
            new_shards = [Shard(s.Stud_id_low, s.Shard_id, s.Shard_size) for s in request.new_shards]
            try:
                shardmap = self.shardmap.with_shards(new_shards)
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
            existing_ids = [s.shard_id for s in self.shardmap.shards]
            for _ in range(request.n - len(placement)):
                shard = least_replicated({**self.placement, **placement}, existing_ids
                                         or [s.shard_id for s in new_shards])
                placement[self._random_name()] = [shard]
            await self._start_servers(placement, schema)
            new_ids = {s.shard_id for s in new_shards}
            try:  # existing shards: refilled under their locks, joining their rings at once
                for name, shard_ids in placement.items():
                    for shard in shard_ids:
                        if shard not in new_ids:
                            async with self.locks.hold([shard]):
                                await self._sync(name, shard, fresh=True)
                await self.metadata.add(new_shards, placement)
            except BaseException:
                await self._discard_new(list(placement))
                raise
            # Saved: now the new shards exist, with their servers.
            self.shardmap = shardmap
            for shard in new_shards:
                self.rings[shard.shard_id] = self._new_ring()
                self.valid_idx[shard.shard_id] = 0
                self.in_sync[shard.shard_id] = set()
            for name, shard_ids in placement.items():
                for shard in shard_ids:
                    self.in_sync[shard].add(name)
                    if shard in new_ids:
                        self.rings[shard].add(name)
            self.placement.update(placement)
            return len(self.placement), list(placement)

    async def rm(self, request: RmRequest) -> tuple[int, list[str]]:
        if len(request.servers) > request.n:
            raise BadRequest(RM_TOO_MANY)
        async with self._membership:
            by_lower = {name.lower(): name for name in self.placement}
            unknown = [n for n in request.servers if n.lower() not in by_lower]
            if unknown:
                raise BadRequest(f"<Error> Server(s) do not exist: {', '.join(unknown)}")
            if request.n > len(self.placement):
                raise BadRequest(f"<Error> Cannot remove {request.n} server(s): only "
                                 f"{len(self.placement)} exist")
            chosen = [by_lower[n.lower()] for n in request.servers]
            others = [n for n in self.placement if n not in chosen]
            self.rng.shuffle(others)
            for name in others:  # random extras, never the last replica of a shard
                if len(chosen) == request.n:
                    break
                if self._safe_to_remove([*chosen, name]):
                    chosen.append(name)
            if len(chosen) < request.n or not self._safe_to_remove(chosen):
                raise BadRequest(f"<Error> Removing {request.n} server(s) "
                                 f"({', '.join(chosen)}) would leave a shard without a replica")
            shards = {s for name in chosen for s in self.placement[name]}
            async with self.locks.hold(shards):  # writes in flight finish first
                await self.metadata.remove_servers(chosen)
                for name in chosen:
                    self._leave_rings(name)
            for name in chosen:
                await self._stop_server(name, remove_data=True)
                for shard in self.placement.pop(name):
                    self.in_sync[shard].discard(name)
            return len(self.placement), chosen

    def _safe_to_remove(self, names: list[str]) -> bool:
        left = {n: s for n, s in self.placement.items() if n not in names}
        return all(servers_of(left, shard.shard_id) for shard in self.shardmap.shards)

    # ---- data (POST /read, POST /write, PUT /update, DELETE /del) -------------------------------
    def _require_config(self) -> Schema:
        if self.schema is None:
            raise BadRequest("<Error> The database is not configured: POST /init first")
        return self.schema

    async def read(self, low: int, high: int) -> tuple[list[str], list[dict[str, Any]]]:
        self._require_config()
        shards = self.shardmap.shards_for_range(low, high)
        # Each shard is asked only for its own part, so the bounds the engine compares are
        # within 64 bits (shards are) whatever the client's.
        parts = await asyncio.gather(*(self._read_shard(
            s.shard_id, max(low, s.low), min(high, s.high - 1)) for s in shards))
        rows = [row for part in parts for row in part]  # shards are in Stud_id order
        return [s.shard_id for s in shards], rows

    async def _read_shard(self, shard: str, low: int, high: int) -> list[dict[str, Any]]:
        answer = await self._ask_one(shard, "POST", "/read",
                                     {"shard": shard, "Stud_id": {"low": low, "high": high}})
        return list(answer["data"])

    def _clean_rows(self, data: list[Any]) -> dict[str, list[dict[str, Any]]]:
        schema = self._require_config()
        rows = [validate_row(schema, row) for row in data]
        seen: set[int] = set()
        dups = sorted({r["Stud_id"] for r in rows if r["Stud_id"] in seen or seen.add(r["Stud_id"])})
        if dups:
            raise BadRequest(f"<Error> Stud_id(s) given twice: {_ids(dups)}")
        groups, homeless = self.shardmap.group(rows)
        if homeless:
            raise BadRequest(f"<Error> Stud_id(s) outside every shard: {_ids(homeless)}")
        return {shard: list(group) for shard, group in groups.items()}

    def _live(self, shard: str) -> list[str]:
        servers = self.rings[shard].servers
        if not servers:
            raise Unavailable(f"<Error> Shard {shard} has no live replica: nothing written")
        return servers

    async def write(self, data: list[Any]) -> int:
        groups = self._clean_rows(data)
        async with self.locks.hold(groups):
            for shard in groups:
                self._live(shard)
            taken = await asyncio.gather(*(self._existing(s, [r["Stud_id"] for r in rows])
                                           for s, rows in groups.items()))
            clash = sorted(i for ids in taken for i in ids)
            if clash:
                raise Conflict(f"<Error> Stud_id(s) already exist: {_ids(clash)}; nothing written")
            outcomes = await asyncio.gather(*(self._fan_out(s, "POST", "/write", {
                "shard": s, "curr_idx": self.valid_idx[s], "data": rows}) for s, rows in groups.items()),
                return_exceptions=True)
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            if failed:  # undo where it was applied: all or nothing (in_sync stays: no ack)
                await asyncio.gather(*(self._fan_out(s, "POST", "/erase", {
                    "shard": s, "Stud_ids": [r["Stud_id"] for r in groups[s]]})
                    for s, o in zip(groups, outcomes) if not isinstance(o, BaseException)),
                    return_exceptions=True)
                raise failed[0]
            try:
                await self._acknowledge({shard: (applied, len(rows)) for (shard, rows), applied
                                         in zip(groups.items(), outcomes)})  # type: ignore[misc]
            except ApiError:  # not recorded, so not acknowledged: undone
                await asyncio.gather(*(self._fan_out(s, "POST", "/erase", {
                    "shard": s, "Stud_ids": [r["Stud_id"] for r in rows]})
                    for s, rows in groups.items()), return_exceptions=True)
                raise
        return sum(len(rows) for rows in groups.values())

    async def _acknowledge(self, changes: dict[str, tuple[list[str], int]]) -> None:
        """Before a write is acknowledged: for each shard it changed, the new row count and
        the servers that applied it, as the shard's in-sync set (if that changed), journaled in
        the metadata in one batch. Memory follows only once it is saved."""
        states: dict[str, tuple[int | None, list[str] | None]] = {}
        for shard, (applied, added) in changes.items():
            members = set(applied)
            states[shard] = (self.valid_idx[shard] + added if added else None,
                             list(members) if members != self.in_sync[shard] else None)
        await self.metadata.set_shard_states(states)
        for shard, (applied, added) in changes.items():
            self.valid_idx[shard] += added
            self.in_sync[shard] = set(applied)

    async def _existing(self, shard: str, stud_ids: list[int]) -> list[int]:
        if not len(self.rings[shard]):
            raise Unavailable(f"<Error> Shard {shard} has no live replica: nothing written")
        try:
            answer = await self._ask_one(shard, "POST", "/exists",
                                         {"shard": shard, "Stud_ids": stud_ids})
        except Unavailable as exc:
            log.warning("no replica of %s could check ids: %s", shard, exc.message)
            raise Unavailable(f"<Error> Shard {shard} has no live replica: nothing written") from None
        return list(answer["Stud_ids"])

    async def _fan_out(self, shard: str, method: str, path: str,
                       payload: dict[str, Any]) -> list[str]:
        """Send to every live replica of ``shard``; returns those that applied it. Those that
        failed where others applied it leave the shard's ring; if none applied it, the refusal
        (or a 503) is raised and nobody is evicted for what the request carried. The caller
        holds the shard's lock."""
        names = self._live(shard)
        results = await asyncio.gather(*(self.call(n, method, path, payload) for n in names),
                                       return_exceptions=True)
        outcome = classify(names, results, _UNREACHABLE)
        for name, why in outcome.to_evict():
            self._evict(name, f"{method} {path}: {why}")
        refusal = outcome.refusal()
        if refusal is not None:
            raise refusal
        if not outcome.applied:
            raise Unavailable(f"<Error> Every replica of {shard} failed: nothing written")
        return outcome.applied

    def _shard_of(self, stud_id: int) -> str:
        shard = self.shardmap.shard_for(stud_id)
        if shard is None:
            raise NotFound(f"<Error> Stud_id {stud_id} is outside every shard")
        return shard.shard_id

    async def update(self, stud_id: int, data: Any) -> None:
        row = validate_row(self._require_config(), data)
        if row["Stud_id"] != stud_id:
            raise BadRequest("<Error> data.Stud_id must equal Stud_id: an update cannot move a row")
        shard = self._shard_of(stud_id)
        async with self.locks.hold([shard]):
            old = await self._current_row(shard, stud_id)
            applied = await self._fan_out(shard, "PUT", "/update",
                                          {"shard": shard, "Stud_id": stud_id, "data": row})
            await self._acknowledge_or_restore(shard, applied, 0, old)

    async def delete(self, stud_id: int) -> None:
        self._require_config()
        shard = self._shard_of(stud_id)
        async with self.locks.hold([shard]):
            old = await self._current_row(shard, stud_id)
            applied = await self._fan_out(shard, "DELETE", "/del",
                                          {"shard": shard, "Stud_id": stud_id})
            await self._acknowledge_or_restore(shard, applied, -1, old)

    async def _current_row(self, shard: str, stud_id: int) -> dict[str, Any]:
        """The row as it is now (kept to put back if the change cannot be recorded), or 404."""
        rows = await self._read_shard(shard, stud_id, stud_id)
        if not rows:
            raise NotFound(f"<Error> No data entry with Stud_id:{stud_id}")
        return rows[0]

    async def _acknowledge_or_restore(self, shard: str, applied: list[str], added: int,
                                      old: dict[str, Any]) -> None:
        try:
            await self._acknowledge({shard: (applied, added)})
        except ApiError:  # not recorded, so not acknowledged: the row as it was
            with contextlib.suppress(ApiError):
                await self._fan_out(shard, "POST", "/write", {
                    "shard": shard, "curr_idx": self.valid_idx[shard], "data": [old]})
            raise


def _ids(ids: Sequence[int], most: int = 10) -> str:
    shown = ", ".join(map(str, ids[:most]))
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")
