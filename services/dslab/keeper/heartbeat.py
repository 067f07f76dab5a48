"""Heartbeats: which watched replicas are dead, found every ``interval`` seconds.

A replica whose process or container is gone (the supervisor's local view) is dead at once;
one that misses ``misses`` heartbeats in a row is dead too (hung, partitioned). ``wake()`` runs
a round now, for callers that saw a request fail. Each round ends in ``on_round(dead)``, the
owner's hook: it decides what to do with the dead (replace them, refill them) and whether
anything else needs upkeep, under its own lock. Both balancers use this class.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..supervisor import Replica, ReplicaSupervisor
from .upstream import UpstreamError, UpstreamPool, format_get

__all__ = ["Dead", "HeartbeatMonitor"]

log = logging.getLogger(__name__)

Dead = list[tuple[str, str]]  # (name, why)


@dataclass
class _Watch:
    replica: Replica
    pool: UpstreamPool
    misses: int = 0


class HeartbeatMonitor:
    def __init__(self, supervisor: ReplicaSupervisor,
                 on_round: Callable[[Dead], Awaitable[None]], *,
                 interval: float = 0.25, timeout: float = 0.5, misses: int = 2) -> None:
        self.supervisor = supervisor
        self.on_round = on_round
        self.interval = interval
        self.timeout = timeout
        self.misses = misses
        self._watched: dict[str, _Watch] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def watch(self, replica: Replica) -> None:
        pool = UpstreamPool(replica.host, replica.port, timeout=self.timeout, max_idle=1)
        self._watched[replica.name] = _Watch(replica, pool)

    def unwatch(self, name: str) -> None:
        watch = self._watched.pop(name, None)
        if watch is not None:
            watch.pool.close()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="heartbeat-monitor")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for name in list(self._watched):
            self.unwatch(name)

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.on_round(await self.find_dead())
            except Exception:  # the monitor must outlive any one bad round
                log.exception("heartbeat round failed")

    async def find_dead(self) -> Dead:
        watched = list(self._watched.values())
        verdicts = await asyncio.gather(*(self._probe(w) for w in watched))
        return [(w.replica.name, why) for w, why in zip(watched, verdicts) if why]

    async def _probe(self, watch: _Watch) -> str | None:
        """None when healthy, else why the replica counts as dead."""
        name = watch.replica.name
        if not self.supervisor.alive(name):
            return "process or container is gone"
        try:
            response = await watch.pool.fetch(format_get("/heartbeat", name, "0"))
            healthy = response.status == 200
            reason = f"heartbeat answered {response.status}"
        except UpstreamError as exc:
            healthy, reason = False, str(exc)
        if healthy:
            watch.misses = 0
            return None
        watch.misses += 1
        if watch.misses >= self.misses:
            return f"{watch.misses} heartbeats missed ({reason})"
        return None
