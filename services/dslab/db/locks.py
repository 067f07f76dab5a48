"""Per-shard write locks that fail loudly.

Writes, updates and deletes of one shard are serialized by that shard's lock; different
shards proceed in parallel. ``hold`` takes several shards' locks in one fixed (sorted) order,
so two batches that share shards cannot deadlock, and gives up with ``LockTimeout`` (a 503)
instead of queueing forever behind a stuck writer. Only ``async with`` is offered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

from ..common.errors import Unavailable

__all__ = ["LockTimeout", "ShardLocks"]


class LockTimeout(Unavailable):
    pass


class ShardLocks:
    def __init__(self, timeout: float = 30.0,
                 on_wait: Callable[[str, float], None] | None = None) -> None:
        self.timeout = timeout
        self.on_wait = on_wait  # (shard, seconds waited): for the metrics
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, shard_id: str) -> asyncio.Lock:
        return self._locks.setdefault(shard_id, asyncio.Lock())

    def locked(self, shard_id: str) -> bool:
        return self._lock(shard_id).locked()

    @asynccontextmanager
    async def hold(self, shard_ids: Iterable[str]) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for shard_id in sorted(set(shard_ids)):
                lock = self._lock(shard_id)
                started = time.perf_counter()
                try:
                    await asyncio.wait_for(lock.acquire(), self.timeout)
                except TimeoutError:
                    raise LockTimeout(f"<Error> Shard {shard_id} stayed locked for "
                                      f"{self.timeout:g}s: try again") from None
                stack.callback(lock.release)
                if self.on_wait is not None:
                    self.on_wait(shard_id, time.perf_counter() - started)
            yield
