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
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..balancer.heartbeat import Dead, HeartbeatMonitor
from ..balancer.routing import NoReplicaAvailable, route
from ..balancer.upstream import UpstreamError, UpstreamPool, format_json_request
from ..common.errors import BadRequest, Conflict, NotFound, Unavailable
from ..ring import ConsistentHashRing
from ..supervisor import Replica, ReplicaSupervisor, SupervisorError, UnknownReplica
from .locks import ShardLocks
from .metadata import ClusterConfig, Metadata
from .payloads import (
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
from .placement import least_replicated, place_randomly, servers_of
from .shardmap import Shard, ShardMap, ShardOverlap

__all__ = ["ServerCallFailed", "ShardCluster"]

log = logging.getLogger(__name__)


class ServerCallFailed(UpstreamError):
    """A shard server answered, but not with a 200 (for the router: try the next replica)."""

    def __init__(self, name: str, status: int, message: str) -> None:
        super().__init__(f"{name} answered {status}: {message}")
        self.status = status


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
        self.placement: dict[str, list[str]] = {}
        self.rings: dict[str, ConsistentHashRing] = {}
        self.servers: dict[str, UpstreamPool] = {}
        self._evicted: dict[str, str] = {}  # name -> why, for the next heartbeat round
        self._replace_errors: dict[str, str] = {}

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the metadata; if the database was configured, start its servers again."""
        config = await self.metadata.load()
        if config is not None:
            async with self._membership:
                self._adopt(config)
                await self._start_servers(config.placement)
                for name, shard_ids in config.placement.items():
                    for shard in shard_ids:
                        self.rings[shard].add(name)
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
        self.rings = {s.shard_id: self._new_ring() for s in config.shards}

    def _new_ring(self) -> ConsistentHashRing:
        return ConsistentHashRing(512, 9, self.hashes)

    # ---- talking to shard servers ---------------------------------------------------------------
    async def call(self, name: str, method: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        pool = self.servers.get(name)
        if pool is None:
            raise ServerCallFailed(name, 503, "not a live server")
        response = await pool.fetch(format_json_request(method, path, name,
                                                        json.dumps(payload).encode()))
        try:
            body = json.loads(response.body) if response.body else {}
        except ValueError:
            body = {"message": response.body[:200].decode("latin-1")}
        if response.status != 200:
            raise ServerCallFailed(name, response.status, body.get("message", ""))
        return body

    async def _start_servers(self, placement: dict[str, list[str]]) -> None:
        """Spawn and /config every server, or none (the started ones are stopped again)."""
        assert self.schema is not None
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
            schema = self.schema.model_dump()
            configured = await asyncio.gather(
                *(self.call(n, "POST", "/config", {"schema": schema, "shards": placement[n]})
                  for n in names), return_exceptions=True)
            failure = next((r for r in configured if isinstance(r, BaseException)), None)
        if failure is not None:
            for replica in started:
                await self._stop_server(replica.name, remove_data=True)
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

    def _evict(self, name: str, why: str) -> None:
        """Take a server out of every ring now; the monitor replaces it on its next round."""
        for ring in self.rings.values():
            if name in ring:
                ring.remove(name)
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

    # ---- failure: replace dead servers ----------------------------------------------------------
    async def _after_heartbeats(self, dead: Dead) -> None:
        for name, why in dead:
            self._evict(name, why)
        if not self._evicted:
            return
        async with self._membership:
            for name, why in list(self._evicted.items()):
                if name not in self.placement:
                    del self._evicted[name]
                    continue
                try:
                    newcomer = await self._replace(name)
                except (Unavailable, SupervisorError, UpstreamError) as exc:
                    if self._replace_errors.get(name) != str(exc):  # once, not every round
                        log.error("replacing %s failed, will retry: %s", name, exc)
                        self._replace_errors[name] = str(exc)
                    continue
                self._replace_errors.pop(name, None)
                del self._evicted[name]
                log.warning("server %s (%s) replaced by %s", name, why, newcomer)

    async def _replace(self, dead: str) -> str:
        shards = self.placement[dead]
        if dead in self.servers:
            await self._stop_server(dead)
        orphaned = [shard for shard in shards if not len(self.rings[shard])]
        if orphaned:  # nothing to copy from: a new empty replica would pass for the data
            raise Unavailable(f"<Error> No live replica of {', '.join(orphaned)} to copy from")
        newcomer = self._random_name()
        await self._start_servers({newcomer: shards})
        try:
            for shard in shards:
                async with self.locks.hold([shard]):
                    await self._refill(newcomer, shard)
        except BaseException:
            await self._stop_server(newcomer, remove_data=True)
            raise
        await self.metadata.replace_server(dead, newcomer, shards)
        del self.placement[dead]
        self.placement[newcomer] = list(shards)
        await self._discard_data(dead)
        return newcomer

    async def _refill(self, newcomer: str, shard: str) -> None:
        """Copy ``shard`` from a live replica to ``newcomer``, then let it join the shard's ring.
        The caller holds the shard's lock."""
        ring = self.rings[shard]

        async def copy(name: str) -> dict[str, Any]:
            return await self.call(name, "GET", "/copy", {"shards": [shard]})

        try:
            _, copied = await route(self.rng.randint(0, 999999), ring, copy)
        except NoReplicaAvailable as exc:
            raise Unavailable(f"<Error> No live replica of {shard} to copy from: {exc}") from exc
        rows = copied[shard]
        await self.call(newcomer, "POST", "/write", {"shard": shard, "curr_idx": 0, "data": rows})
        ring.add(newcomer)
        log.info("%s holds %s: %d rows copied", newcomer, shard, len(rows))

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
            self._adopt(config)
            try:
                await self._start_servers(placement)
            except Unavailable:
                self._adopt(ClusterConfig(request.schema_, [], {}))
                self.schema = None
                raise
            for name, shard_ids in placement.items():
                for shard in shard_ids:
                    self.rings[shard].add(name)
            await self.metadata.save(config)

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
            if self.schema is None:
                raise BadRequest("<Error> The database is not configured: POST /init first")
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
            # New shards exist (empty) before their servers join them.
            self.shardmap = shardmap
            for shard in new_shards:
                self.rings[shard.shard_id] = self._new_ring()
                self.valid_idx[shard.shard_id] = 0
            try:
                await self._start_servers(placement)
            except Unavailable:
                self._forget_shards(new_shards)
                raise
            new_ids = {s.shard_id for s in new_shards}
            try:
                for name, shard_ids in placement.items():
                    for shard in shard_ids:
                        if shard in new_ids:
                            self.rings[shard].add(name)
                        else:
                            async with self.locks.hold([shard]):
                                await self._refill(name, shard)
            except BaseException:
                for name in placement:
                    for ring in self.rings.values():
                        if name in ring:
                            ring.remove(name)
                    await self._stop_server(name, remove_data=True)
                self._forget_shards(new_shards)
                raise
            self.placement.update(placement)
            await self.metadata.add(new_shards, placement)
            return len(self.placement), list(placement)

    def _forget_shards(self, shards: Sequence[Shard]) -> None:
        gone = {s.shard_id for s in shards}
        self.shardmap = ShardMap(s for s in self.shardmap.shards if s.shard_id not in gone)
        for shard_id in gone:
            self.rings.pop(shard_id, None)
            self.valid_idx.pop(shard_id, None)

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
                for name in chosen:
                    for shard in self.placement[name]:
                        if name in self.rings[shard]:
                            self.rings[shard].remove(name)
            for name in chosen:
                await self._stop_server(name, remove_data=True)
                del self.placement[name]
            await self.metadata.remove_servers(chosen)
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
        parts = await asyncio.gather(*(self._read_shard(s.shard_id, low, high) for s in shards))
        rows = [row for part in parts for row in part]  # shards are in Stud_id order
        return [s.shard_id for s in shards], rows

    async def _read_shard(self, shard: str, low: int, high: int) -> list[dict[str, Any]]:
        async def read(name: str) -> dict[str, Any]:
            return await self.call(name, "POST", "/read",
                                   {"shard": shard, "Stud_id": {"low": low, "high": high}})
        try:
            _, answer = await route(self.rng.randint(0, 999999), self.rings[shard], read,
                                    lambda name, exc: self.monitor.wake())
        except NoReplicaAvailable as exc:
            raise Unavailable(f"<Error> Shard {shard} has no live replica: {exc}") from None
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
            written = await asyncio.gather(*(self._fan_out(s, "POST", "/write", {
                "shard": s, "curr_idx": self.valid_idx[s], "data": rows}) for s, rows in groups.items()))
            lost = [s for s, ok in zip(groups, written) if not ok]
            if lost:
                await asyncio.gather(*(self._fan_out(s, "POST", "/erase", {
                    "shard": s, "Stud_ids": [r["Stud_id"] for r in groups[s]]})
                    for s, ok in zip(groups, written) if ok))
                raise Unavailable(f"<Error> Every replica of {', '.join(lost)} failed the write: "
                                  "nothing written")
            for shard, rows in groups.items():
                self.valid_idx[shard] += len(rows)
                await self.metadata.set_valid_idx(shard, self.valid_idx[shard])
        return sum(len(rows) for rows in groups.values())

    async def _existing(self, shard: str, stud_ids: list[int]) -> list[int]:
        async def exists(name: str) -> dict[str, Any]:
            return await self.call(name, "POST", "/exists", {"shard": shard, "Stud_ids": stud_ids})
        try:
            _, answer = await route(self.rng.randint(0, 999999), self.rings[shard], exists,
                                    lambda name, exc: self.monitor.wake())
        except NoReplicaAvailable as exc:
            log.warning("no replica of %s could check ids: %s", shard, exc)
            raise Unavailable(f"<Error> Shard {shard} has no live replica: nothing written") from None
        return list(answer["Stud_ids"])

    async def _fan_out(self, shard: str, method: str, path: str, payload: dict[str, Any]) -> bool:
        """Send to every live replica of ``shard``; evict those that fail. True if any succeeded.
        The caller holds the shard's lock."""
        names = self._live(shard)
        results = await asyncio.gather(*(self.call(n, method, path, payload) for n in names),
                                       return_exceptions=True)
        ok = False
        for name, result in zip(names, results):
            if isinstance(result, (UpstreamError, OSError)):
                self._evict(name, f"{method} {path} failed: {result}")
            elif isinstance(result, BaseException):
                raise result
            else:
                ok = True
        return ok

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
            if not await self._existing(shard, [stud_id]):
                raise NotFound(f"<Error> No data entry with Stud_id:{stud_id}")
            if not await self._fan_out(shard, "PUT", "/update",
                                       {"shard": shard, "Stud_id": stud_id, "data": row}):
                raise Unavailable(f"<Error> Every replica of {shard} failed the update")

    async def delete(self, stud_id: int) -> None:
        self._require_config()
        shard = self._shard_of(stud_id)
        async with self.locks.hold([shard]):
            if not await self._existing(shard, [stud_id]):
                raise NotFound(f"<Error> No data entry with Stud_id:{stud_id}")
            if not await self._fan_out(shard, "DELETE", "/del", {"shard": shard, "Stud_id": stud_id}):
                raise Unavailable(f"<Error> Every replica of {shard} failed the delete")
            self.valid_idx[shard] -= 1
            await self.metadata.set_valid_idx(shard, self.valid_idx[shard])


def _ids(ids: Sequence[int], most: int = 10) -> str:
    shown = ", ".join(map(str, ids[:most]))
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")
