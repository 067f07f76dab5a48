"""Per-shard locks that fail loudly: exclusive for changes, shared for linearizable reads.

Writes, updates and deletes of one shard, and refills of it, are serialized by that shard's
lock held exclusively (``hold``); different shards proceed in parallel. ``hold`` takes several
shards' locks in one fixed (sorted) order, so two batches that share shards cannot deadlock.

With linearizable reads, a read of a shard holds its lock shared (``share``): reads run
together, but never while a change is being applied to some replicas and not yet to others,
or undone: a read sees a change on every replica or on none. Readers and writers take turns
(``rwlock.PhaseFairLock``): neither can starve the other.

Both give up with ``LockTimeout`` (a 503) instead of queueing forever behind a stuck writer.
A task that holds a shard exclusively may read it (the lock is re-entrant for its owner task).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TypeVar

from ..common.errors import Unavailable
from .rwlock import PhaseFairLock

__all__ = ["LockTimeout", "ShardLocks"]

T = TypeVar("T")


class LockTimeout(Unavailable):
    pass


class ShardLocks:
    def __init__(self, timeout: float = 30.0,
                 on_wait: Callable[[str, float], None] | None = None) -> None:
        self.timeout = timeout
        self.on_wait = on_wait  # (shard, seconds an exclusive hold waited): for the metrics
        self._locks: dict[str, PhaseFairLock] = {}

    def _lock(self, shard_id: str) -> PhaseFairLock:
        lock = self._locks.get(shard_id)
        if lock is None:
            lock = self._locks[shard_id] = PhaseFairLock()
        return lock

    def locked(self, shard_id: str) -> bool:
        return self._lock(shard_id).write_locked

    @asynccontextmanager
    async def hold(self, shard_ids: Iterable[str]) -> AsyncIterator[None]:
        """Every shard of ``shard_ids`` exclusively."""
        async with AsyncExitStack() as stack:
            for shard_id in sorted(set(shard_ids)):
                lock = self._lock(shard_id)
                started = time.perf_counter()
                await self._acquire(shard_id, lock.acquire_write)
                stack.callback(lock.release_write)
                if self.on_wait is not None:
                    self.on_wait(shard_id, time.perf_counter() - started)
            yield

    @asynccontextmanager
    async def share(self, shard_id: str) -> AsyncIterator[None]:
        """One shard, shared with other readers: no change of it runs meanwhile."""
        lock = self._lock(shard_id)
        held = await self._acquire(shard_id, lock.acquire_read)
        try:
            yield
        finally:
            if held:
                lock.release_read()

    async def _acquire(self, shard_id: str, acquire: Callable[[], Awaitable[T]]) -> T:
        try:  # asyncio.timeout, not wait_for: the lock is owned by the task that acquires it
            async with asyncio.timeout(self.timeout):
                return await acquire()
        except TimeoutError:
            raise LockTimeout(f"<Error> Shard {shard_id} stayed locked for "
                              f"{self.timeout:g}s: try again") from None
