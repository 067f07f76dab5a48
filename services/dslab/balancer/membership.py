"""The replica set behind the balancer: ring, supervisor, upstream pools and their upkeep.

Every change of membership (POST /add, DELETE /rm, replacing a dead replica) runs under one
lock, so concurrent calls are serialized and the ring, the upstream pools and the supervisor
never disagree. Lookups on the hot path take no lock: they read the ring, which replaces its
tables rather than mutating them.

A ``HeartbeatMonitor`` finds dead replicas (gone, or ``heartbeat_misses`` heartbeats missed);
a failed proxied request wakes it early. A dead replica leaves the ring, is removed, and the
set is filled back to its target size with replicas of random names.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..common.errors import BadRequest, Unavailable
from ..keeper.heartbeat import Dead, HeartbeatMonitor
from ..keeper.upstream import UpstreamClosed, UpstreamPool, UpstreamResponse
from ..ring import ConsistentHashRing, RingError
from ..supervisor import (
    Replica,
    ReplicaSupervisor,
    SupervisorError,
    UnknownReplica,
    random_hostname,
)

__all__ = ["ReplicaSet"]

log = logging.getLogger(__name__)


@dataclass
class _Member:
    replica: Replica
    upstream: UpstreamPool


@dataclass
class ReplicaSet:
    supervisor: ReplicaSupervisor
    ring: ConsistentHashRing
    request_timeout: float = 5.0
    heartbeat_interval: float = 0.25
    heartbeat_timeout: float = 0.5
    heartbeat_misses: int = 2
    name_prefix: str = "Server"
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._members: dict[str, _Member] = {}
        self._lock = asyncio.Lock()
        self.monitor = HeartbeatMonitor(
            self.supervisor, self._after_heartbeats, interval=self.heartbeat_interval,
            timeout=self.heartbeat_timeout, misses=self.heartbeat_misses)
        self.target = 0

    # ---- read side --------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._members)

    async def fetch(self, name: str, raw_request: bytes) -> UpstreamResponse:
        member = self._members.get(name)
        if member is None:  # removed while the request was on its way
            raise UpstreamClosed(f"replica {name} left the set")
        return await member.upstream.fetch(raw_request)

    def suspect(self, name: str, exc: Exception | None = None) -> None:
        """A proxied request failed on ``name``: check the replicas now, not at the next tick."""
        log.info("request to %s failed (%s): checking heartbeats now", name, exc)
        self.monitor.wake()

    # ---- lifecycle --------------------------------------------------------------------------
    async def start(self, names: Sequence[str]) -> None:
        async with self._lock:
            await self._spawn_all(list(names))
            self.target = len(self._members)
        self.monitor.start()

    async def close(self) -> None:
        await self.monitor.close()
        async with self._lock:
            for name in list(self._members):
                self._forget(name)
            await self.supervisor.close()

    # ---- scaling (POST /add, DELETE /rm) ----------------------------------------------------
    async def add(self, n: int, hostnames: Sequence[str]) -> list[str]:
        async with self._lock:
            taken = {name.lower() for name in self._members}
            existing = [name for name in hostnames if name.lower() in taken]
            if existing:
                raise BadRequest(f"<Error> Replica(s) already exist: {', '.join(existing)}")
            room = self.ring.capacity - len(self.ring)
            if n > room:  # checked before naming: n may be absurdly large
                raise BadRequest(
                    f"<Error> Cannot add {n} replica(s): a ring of {self.ring.slots} slots with "
                    f"K={self.ring.vnodes} holds at most {self.ring.capacity} servers and "
                    f"{len(self.ring)} are there")
            names = list(hostnames)
            while len(names) < n:
                names.append(random_hostname([*self._members, *names], self.name_prefix, self.rng))
            try:
                await self._spawn_all(names)
            except RingError as exc:
                raise BadRequest(f"<Error> Cannot add {n} replica(s): {exc}") from None
            self.target += n
            return self.names()

    async def remove(self, n: int, hostnames: Sequence[str]) -> tuple[list[str], list[str]]:
        """Returns (the names removed, the names left)."""
        async with self._lock:
            by_lower = {name.lower(): name for name in self._members}
            unknown = [name for name in hostnames if name.lower() not in by_lower]
            if unknown:
                raise BadRequest(f"<Error> Replica(s) do not exist: {', '.join(unknown)}")
            if n > len(self._members):
                raise BadRequest(
                    f"<Error> Cannot remove {n} replica(s): only {len(self._members)} exist")
            if n == len(self._members):  # a balancer with no replica could only answer 503
                raise BadRequest(f"<Error> Cannot remove {n} replica(s): at least one must stay")
            chosen = [by_lower[name.lower()] for name in hostnames]
            others = [name for name in self._members if name not in chosen]
            chosen += self.rng.sample(others, n - len(chosen))
            for name in chosen:
                self._forget(name)
            await asyncio.gather(*(self._stop(name) for name in chosen))
            self.target -= n
            for name in chosen:
                self._record("removed", name)
            return chosen, self.names()

    # ---- internals --------------------------------------------------------------------------
    async def _spawn_all(self, names: list[str]) -> None:
        """Start every replica or none: on any failure the ones started are stopped again.

        Raises ``RingError`` before starting anything when the ring cannot place them all.
        """
        self.ring.check_can_add(names)
        results = await asyncio.gather(*(self.supervisor.spawn(name) for name in names),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        started = [r for r in results if isinstance(r, Replica)]
        if failed:
            await asyncio.gather(*(self._stop(r.name) for r in started))
            raise Unavailable(f"<Error> Could not start replicas: {failed[0]}") from failed[0]
        for replica in started:
            self._join(replica)

    def _join(self, replica: Replica) -> None:
        self.ring.add(replica.name)
        self._members[replica.name] = _Member(
            replica, UpstreamPool(replica.host, replica.port, timeout=self.request_timeout))
        self.monitor.watch(replica)
        self._record("added", replica.name, replica.address)

    def _forget(self, name: str) -> None:
        """Take ``name`` off the ring and close its connections (it stops getting requests)."""
        member = self._members.pop(name)
        self.ring.remove(name)
        member.upstream.close()
        self.monitor.unwatch(name)

    async def _stop(self, name: str) -> None:
        try:
            await self.supervisor.remove(name)
        except UnknownReplica:
            pass

    def _record(self, kind: str, name: str, detail: str = "") -> None:
        log.info("replica %s %s %s", name, kind, detail)

    async def _after_heartbeats(self, dead: Dead) -> None:
        if not dead and len(self._members) >= self.target:
            return
        async with self._lock:
            for name, why in dead:
                if name in self._members:  # not removed by /rm meanwhile
                    self._forget(name)
                    self._record("died", name, why)
                    await self._stop(name)
            await self._fill_to_target()

    async def _fill_to_target(self) -> None:
        missing = self.target - len(self._members)
        if missing <= 0:
            return
        names: list[str] = []
        for _ in range(missing):
            names.append(random_hostname([*self._members, *names], self.name_prefix, self.rng))
        try:
            await self._spawn_all(names)
        except (Unavailable, SupervisorError, RingError) as exc:
            log.error("could not start replacements, will retry: %s", exc)
            return
        for name in names:
            self._record("replaced", name)
