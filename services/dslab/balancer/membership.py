"""The replica set behind the Part 1 balancer: its ring on the shared replica keeper.

Every change of membership (POST /add, DELETE /rm, replacing a dead replica) runs under the
keeper's lock, so concurrent calls are serialized and the ring, the upstream pools and the
supervisor never disagree. Lookups on the hot path take no lock: they read the ring, which
replaces its tables rather than mutating them.

The keeper finds dead replicas (gone, or ``heartbeat_misses`` heartbeats missed; a failed
proxied request wakes it early), takes them off the ring and replaces each with a replica of a
random name. This module adds only what is Part 1's: the ring, and the contract's messages.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..common.errors import BadRequest
from ..keeper.keeper import ReplicaKeeper, Tenant
from ..keeper.upstream import UpstreamClosed, UpstreamPool, UpstreamResponse
from ..ring import HashRing, RingError
from ..supervisor import Replica, ReplicaSupervisor, random_hostname

__all__ = ["ReplicaSet"]

log = logging.getLogger(__name__)


@dataclass
class ReplicaSet(Tenant):
    supervisor: ReplicaSupervisor
    ring: HashRing
    request_timeout: float = 5.0
    heartbeat_interval: float = 0.25
    heartbeat_timeout: float = 0.5
    heartbeat_misses: int = 2
    name_prefix: str = "Server"
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic  # the keeper's backoffs; a test may step it
    on_change: Callable[[], None] = lambda: None  # the ring changed (workers copy it)

    def __post_init__(self) -> None:
        self.keeper = ReplicaKeeper(
            self.supervisor, self, noun="replicas", request_timeout=self.request_timeout,
            heartbeat_interval=self.heartbeat_interval, heartbeat_timeout=self.heartbeat_timeout,
            heartbeat_misses=self.heartbeat_misses, clock=self.clock)

    # ---- read side --------------------------------------------------------------------------
    def names(self) -> list[str]:
        return self.keeper.serving()

    @property
    def target(self) -> int:
        """How many replicas the set keeps alive: the serving ones and those being replaced."""
        return len(self.keeper.serving()) + len(self.keeper.evicted())

    async def fetch(self, name: str, raw_request: bytes) -> UpstreamResponse:
        pool = self.keeper.pool(name)
        if pool is None:  # removed while the request was on its way
            raise UpstreamClosed(f"replica {name} left the set")
        return await pool.fetch(raw_request)

    def pool(self, name: str) -> UpstreamPool | None:
        return self.keeper.pool(name)

    def suspect(self, name: str, exc: Exception | None = None) -> None:
        """A proxied request failed on ``name``: check the replicas now, not at the next tick."""
        log.info("request to %s failed (%s): checking heartbeats now", name, exc)
        self.keeper.wake()

    # ---- lifecycle --------------------------------------------------------------------------
    async def start(self, names: Sequence[str], *, heartbeats: bool = True) -> None:
        """Start the replicas; ``heartbeats=False`` leaves the rounds to the caller (tests
        step them with ``keeper.heartbeat_round``)."""
        async with self.keeper.lock:
            await self._start_on_ring(list(names))
        if heartbeats:
            self.keeper.start_monitor()

    async def close(self) -> None:
        await self.keeper.close()

    # ---- scaling (POST /add, DELETE /rm) ----------------------------------------------------
    async def add(self, n: int, hostnames: Sequence[str]) -> list[str]:
        async with self.keeper.lock:
            taken = {name.lower() for name in self.keeper.names()}
            existing = [name for name in hostnames if name.lower() in taken]
            if existing:
                raise BadRequest(f"<Error> Replica(s) already exist: {', '.join(existing)}")
            room = self.ring.capacity - len(self.ring)
            if n > room:  # checked before naming: n may be absurdly large
                raise BadRequest(
                    f"<Error> Cannot add {n} replica(s): {self.ring.describe_capacity()} and "
                    f"{len(self.ring)} are there")
            names = list(hostnames)
            while len(names) < n:
                names.append(random_hostname([*self.keeper.names(), *names], self.name_prefix,
                                             self.rng))
            try:
                await self._start_on_ring(names)
            except RingError as exc:
                raise BadRequest(f"<Error> Cannot add {n} replica(s): {exc}") from None
            return self.names()

    async def remove(self, n: int, hostnames: Sequence[str]) -> tuple[list[str], list[str]]:
        """Returns (the names removed, the names left)."""
        async with self.keeper.lock:
            serving = self.names()
            by_lower = {name.lower(): name for name in serving}
            unknown = [name for name in hostnames if name.lower() not in by_lower]
            if unknown:
                raise BadRequest(f"<Error> Replica(s) do not exist: {', '.join(unknown)}")
            if n > len(serving):
                raise BadRequest(
                    f"<Error> Cannot remove {n} replica(s): only {len(serving)} exist")
            if n == len(serving):  # a balancer with no replica could only answer 503
                raise BadRequest(f"<Error> Cannot remove {n} replica(s): at least one must stay")
            chosen = [by_lower[name.lower()] for name in hostnames]
            others = [name for name in serving if name not in chosen]
            chosen += self.rng.sample(others, n - len(chosen))
            await self.keeper.retire(chosen)
            for name in chosen:
                log.info("replica %s removed", name)
            return chosen, self.names()

    async def _start_on_ring(self, names: list[str]) -> None:
        """Start every replica and put it on the ring, or none. Raises ``RingError`` before
        starting anything when the ring cannot place them all."""
        self.ring.check_can_add(names)
        for replica in await self.keeper.start_all(names):
            self.ring.add(replica.name)
        self.on_change()

    # ---- the keeper's hooks -----------------------------------------------------------------
    def leave(self, name: str) -> None:
        if name in self.ring:
            self.ring.remove(name)
            self.on_change()

    async def hand_over(self, dead: str, newcomer: Replica) -> None:
        self.ring.add(newcomer.name)
        self.on_change()

    def name_replacement(self, dead: str, taken: Sequence[str]) -> str:
        return random_hostname(taken, self.name_prefix, self.rng)
