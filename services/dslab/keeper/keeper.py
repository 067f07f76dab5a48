"""The replica keeper: the lifecycle of a pool of replicas that both balancers share.

    start_all        start every replica of a batch and prepare each, or none of them
    evict            take a replica out of service now; it is replaced on the next round
    retire           stop a replica for good (/rm, or a newcomer that is undone): data too
    heartbeat round  every dead replica is evicted; then, under the membership lock, the
                     tenant's upkeep runs and each evicted replica is replaced by a newcomer
                     with a fresh name: started, handed over (the tenant's hook), and only
                     then is the dead one's data discarded. A replacement that fails half way
                     retires its newcomer; the dead one waits, backing off, for a later round.

What differs between the two balancers is their ``Tenant``: Part 1 puts a newcomer on its
ring; Part 2 configures it, refills its shards from live replicas and saves the change first.
Every change of membership, the tenant's included, runs under ``lock``; requests on the hot
path take no lock (they read the tenant's rings and ``pool``).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..common.errors import ApiError, Unavailable
from ..supervisor import Replica, ReplicaSupervisor, SupervisorError, UnknownReplica
from .errors import UpstreamError
from .heartbeat import Dead, HeartbeatMonitor
from .upstream import UpstreamPool

__all__ = ["ReplicaKeeper", "Tenant"]

log = logging.getLogger(__name__)

# What a replacement may fail with, to be retried on a later round (anything else is a bug).
RETRYABLE = (ApiError, SupervisorError, UpstreamError, OSError)


class Tenant:
    """What a balancer plugs into the keeper. Every hook runs under the keeper's lock; the
    defaults suit a pool of stateless replicas."""

    async def prepare(self, replica: Replica) -> None:
        """``replica`` just started: make it ready to serve. Raising refuses the whole batch."""

    def leave(self, name: str) -> None:
        """Stop routing requests to ``name`` (evicted, or about to be stopped)."""

    def wanted(self, name: str) -> bool:
        """Is the evicted ``name`` still to be replaced?"""
        return True

    async def upkeep(self) -> None:
        """Runs at the start of a round that has something to replace."""

    def check_replaceable(self, dead: str) -> None:
        """Raise (an ``ApiError``) while ``dead`` cannot be replaced yet: nothing is started."""

    async def hand_over(self, dead: str, newcomer: Replica) -> None:
        """Make ``newcomer`` take ``dead``'s place. Raising abandons it: it is retired."""

    def name_replacement(self, dead: str, taken: Sequence[str]) -> str:
        """A fresh name for ``dead``'s replacement, none of ``taken`` (the tenant may note what
        the newcomer will hold)."""
        raise NotImplementedError


@dataclass
class _Member:
    replica: Replica
    pool: UpstreamPool


@dataclass
class _Waiting:
    """An evicted replica whose replacement failed: why, and when to try again."""

    why: str
    node: str | None = None  # where it ran: its replacement keeps off it (it may be dead too)
    attempts: int = 0
    next_try: float = 0.0


class ReplicaKeeper:
    def __init__(self, supervisor: ReplicaSupervisor, tenant: Tenant, *, noun: str = "replicas",
                 request_timeout: float = 5.0, heartbeat_interval: float = 0.25,
                 heartbeat_timeout: float = 0.5, heartbeat_misses: int = 2,
                 data_root: Path | None = None, max_backoff: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.supervisor = supervisor
        self.tenant = tenant
        self.noun = noun
        self.request_timeout = request_timeout
        self.data_root = data_root  # the process backend: each replica's data in a folder here
        self.lock = asyncio.Lock()
        self.monitor = HeartbeatMonitor(supervisor, self.heartbeat_round,
                                        interval=heartbeat_interval, timeout=heartbeat_timeout,
                                        misses=heartbeat_misses)
        self.backoff = heartbeat_interval
        self.max_backoff = max_backoff if max_backoff is not None else 8 * heartbeat_interval
        self.clock = clock
        self._members: dict[str, _Member] = {}
        self._evicted: dict[str, _Waiting] = {}
        self.replacements = 0  # counts, read by the metrics at scrape time
        self.evictions = 0
        self._logged: dict[str, str] = {}

    # ---- what the tenant and the hot path read ----------------------------------------------
    def names(self) -> list[str]:
        """Started and not stopped, in start order (evicted ones too, until they are stopped)."""
        return list(self._members)

    def serving(self) -> list[str]:
        """Started and not evicted, in start order."""
        return [name for name in self._members if name not in self._evicted]

    def evicted(self) -> list[str]:
        return list(self._evicted)

    def placement(self) -> dict[str, str]:
        return {name: member.replica.node for name, member in self._members.items()
                if member.replica.node is not None and name not in self._evicted}

    def is_evicted(self, name: str) -> bool:
        return name in self._evicted

    def pool(self, name: str) -> UpstreamPool | None:
        member = self._members.get(name)
        return member.pool if member is not None else None

    # ---- lifecycle --------------------------------------------------------------------------
    def start_monitor(self) -> None:
        self.monitor.start()

    async def close(self) -> None:
        """Stop the heartbeats and every replica (their data is kept)."""
        await self.monitor.close()
        async with self.lock:
            for member in self._members.values():
                member.pool.close()
            self._members.clear()
            await self.supervisor.close()

    async def start_all(self, names: Sequence[str], *, keep_data: bool = False,
                        avoid: Collection[str] = ()) -> list[Replica]:
        """Start and prepare every replica of ``names``, or none: on any failure the started
        ones are stopped again, their data removed unless ``keep_data`` (a restart in place,
        which finds its data), and ``Unavailable`` is raised. ``avoid``: nodes to keep off
        (``ReplicaSupervisor.spawn``). The caller holds ``lock``."""
        results = await asyncio.gather(*(self.supervisor.spawn(n, avoid=avoid) for n in names),
                                       return_exceptions=True)
        started = [r for r in results if isinstance(r, Replica)]
        for replica in started:
            self._members[replica.name] = _Member(
                replica, UpstreamPool(replica.host, replica.port, timeout=self.request_timeout,
                                      coarse_timeout=True))
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is None:
            prepared = await asyncio.gather(*(self.tenant.prepare(r) for r in started),
                                            return_exceptions=True)
            failure = next((r for r in prepared if isinstance(r, BaseException)), None)
        if failure is not None:
            await asyncio.gather(*(self.stop(r.name, discard_data=not keep_data)
                                   for r in started))
            if not isinstance(failure, Exception):  # a cancellation, not a failure
                raise failure
            raise Unavailable(f"<Error> Could not start {self.noun}: {failure}") from failure
        for replica in started:
            self.monitor.watch(replica)
            log.info("%s started at %s", replica.name, replica.address)
        return started

    async def stop(self, name: str, *, discard_data: bool = False) -> None:
        """Stop ``name`` (the tenant stops routing to it first); its data stays unless asked."""
        self.tenant.leave(name)
        self.monitor.unwatch(name)
        member = self._members.pop(name, None)
        if member is not None:
            member.pool.close()
        try:
            await self.supervisor.remove(name)
        except UnknownReplica:
            pass
        if discard_data:
            await self.discard_data(name)

    async def retire(self, names: Sequence[str]) -> None:
        """Gone for good (/rm, or newcomers of a change that failed): out of service, stopped
        (in parallel: an engine takes seconds to shut down), data removed, never replaced."""
        for name in names:
            self._evicted.pop(name, None)
            self._logged.pop(name, None)
            self.tenant.leave(name)
        await asyncio.gather(*(self.stop(name, discard_data=True) for name in names))

    async def restart_in_place(self, name: str) -> Replica:
        """Start ``name`` again on its own data (it died with data nobody else holds). The
        caller holds ``lock``; raises ``Unavailable`` if it cannot start."""
        if name in self._members:
            await self.stop(name)  # dead or hung: keep its data, not the process
        [replica] = await self.start_all([name], keep_data=True)
        self._evicted.pop(name, None)
        self._logged.pop(name, None)
        return replica

    async def discard_data(self, name: str) -> None:
        """A replica gone for good: its data goes too (a volume, or a folder)."""
        try:
            await self.supervisor.discard_data(name)
        except SupervisorError as exc:
            log.error("the data of %s could not be removed: %s", name, exc)
        if self.data_root is not None:
            shutil.rmtree(self.data_root / name, ignore_errors=True)

    # ---- failure ----------------------------------------------------------------------------
    def evict(self, name: str, why: str) -> None:
        """Take ``name`` out of service now (the tenant stops routing to it); the next round
        replaces it. The caller need not hold the lock: this only marks and wakes."""
        self.tenant.leave(name)
        if name in self._members and name not in self._evicted:
            log.warning("%s evicted: %s", name, why)
            self._evicted[name] = _Waiting(why, self._members[name].replica.node)
            self.evictions += 1
            self.monitor.wake()

    def wake(self) -> None:
        self.monitor.wake()

    async def heartbeat_round(self, dead: Dead) -> None:
        """The monitor's hook: evict the dead, then replace every evicted replica still wanted,
        all at once (a host or a shard lost takes several: a start can take seconds)."""
        for name, why in dead:
            self.evict(name, why)
        if not self._evicted:
            return
        async with self.lock:
            await self._settle()
            await self.tenant.upkeep()
            due = []
            for name, waiting in list(self._evicted.items()):
                if name not in self._evicted:  # the upkeep started it again in place
                    continue
                if not self.tenant.wanted(name):
                    del self._evicted[name]
                    continue
                if self.clock() >= waiting.next_try:
                    due.append(name)
            # Their data stays until the newcomers have taken over.
            await asyncio.gather(*(self.stop(name) for name in due))
            newcomers: dict[str, str] = {}  # dead -> its newcomer's name
            for name in due:
                try:
                    self.tenant.check_replaceable(name)
                except RETRYABLE as exc:
                    self._retry_later(name, exc)
                    continue
                taken = [*self._members, *self._evicted, *newcomers.values()]
                newcomers[name] = self.tenant.name_replacement(name, taken)
            outcomes = await asyncio.gather(
                *(self._take_over(name, newcomer, self._evicted[name].node)
                  for name, newcomer in newcomers.items()), return_exceptions=True)
            for name, outcome in zip(newcomers, outcomes, strict=True):
                if isinstance(outcome, RETRYABLE):
                    self._retry_later(name, outcome)
                elif isinstance(outcome, BaseException):
                    raise outcome  # a bug, or the round cancelled

    def _retry_later(self, name: str, exc: Exception) -> None:
        """A replacement of ``name`` failed: tried again after a backoff that doubles."""
        waiting = self._evicted[name]
        waiting.attempts += 1
        waiting.next_try = self.clock() + min(self.backoff * 2 ** (waiting.attempts - 1),
                                              self.max_backoff)
        self.log_once(name, f"replacing {name} failed, will retry: {exc}")

    async def _settle(self) -> None:
        """A replica found dead is rarely alone: a shard or a host lost takes several at once,
        and their deaths are seen milliseconds apart. Replacing one (copied from a live
        replica) while the rest of its shard is dying wastes a start and then fails; starting
        the shard's servers again in place on their data (the tenant's upkeep) is what brings
        it back. So before choosing, wait one heartbeat interval and take every replica whose
        process or container is gone by then out as well."""
        if not any(self.clock() >= w.next_try for w in self._evicted.values()):
            return
        await asyncio.sleep(self.backoff)  # the heartbeat interval
        for name in list(self._members):
            if name not in self._evicted and not self.supervisor.alive(name):
                self.evict(name, "process or container is gone")

    async def _take_over(self, dead: str, name: str, dead_node: str | None) -> None:
        """Start ``name`` (off ``dead_node``, if another node can take it) and have it take
        ``dead``'s place; then ``dead``'s data goes."""
        avoid = [dead_node] if dead_node is not None else []
        [newcomer] = await self.start_all([name], avoid=avoid)
        try:
            await self.tenant.hand_over(dead, newcomer)
        except BaseException:
            await self.retire([name])
            raise
        # Counted with no await after the hand-over: the tenant's change is published to the
        # workers as soon as this yields, and the copy they get must count it.
        waiting = self._evicted.pop(dead)
        self._logged.pop(dead, None)
        self.replacements += 1
        log.warning("%s (%s) replaced by %s", dead, waiting.why, newcomer.name)
        await self.discard_data(dead)

    def log_once(self, key: str, message: str) -> None:
        """A failure that repeats every round is logged when it changes, not each time."""
        if self._logged.get(key) != message:
            log.error("%s", message)
            self._logged[key] = message
