"""Group commit per shard: the writes that wait for a shard are applied as one batch.

The engine pays per commit, not per row (about 500 journaled single inserts/s against about
3 300 rows/s in batches of 100, one engine, measured here). So a write of one shard does not
take the shard's lock by itself: it joins the shard's queue, and one drainer per shard takes,
under the shard's lock, every waiting write (up to ``max_rows`` rows and ``max_bytes``) and
hands them to ``commit`` as one batch: one existence check, one bulk write per replica, one
saved row count. Each write keeps its own answer: ``commit`` resolves each one's future.

Writes of different shards drain in parallel; updates and deletes take the same shard lock,
so they and the batches of that shard are serialized.

    take_batch  which waiting writes go in the next batch (pure)
    sort_out    which writes of a batch go in now, are refused, or wait for an earlier one (pure)
    commit_in_rounds  a batch settled round by round, the commit injected
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from functools import cached_property
from typing import Any

import orjson

from ..common.errors import Unavailable
from .locks import ShardLocks

__all__ = ["GroupCommitter", "Waiting", "commit_in_rounds", "sort_out", "take_batch"]

Row = dict[str, Any]


class Waiting:
    """One client's write of one shard, waiting for its batch."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @cached_property
    def size(self) -> int:
        """Bytes on the wire to a shard server (computed only when a batch must weigh it)."""
        return len(orjson.dumps(self.rows))

    @property
    def ids(self) -> list[int]:
        return [row["Stud_id"] for row in self.rows]

    def succeed(self, count: int) -> None:
        if not self.answer.done():
            self.answer.set_result(count)

    def fail(self, exc: BaseException) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


def take_batch(queue: deque[Waiting], max_rows: int, max_bytes: int) -> list[Waiting]:
    """The next batch, in arrival order: the first write always, then more while the batch
    stays within ``max_rows`` rows and ``max_bytes`` bytes."""
    batch = [queue.popleft()]
    rows = len(batch[0].rows)
    size = batch[0].size if len(queue) else 0
    while queue:
        nxt = queue[0]
        if rows + len(nxt.rows) > max_rows or size + nxt.size > max_bytes:
            break
        batch.append(queue.popleft())
        rows += len(nxt.rows)
        size += nxt.size
    return batch


def sort_out(batch: Iterable[Waiting], stored: Iterable[int]) -> tuple[
        list[Waiting], dict[Waiting, list[int]], list[Waiting]]:
    """(the writes that go in now, {refused write: its stored ids}, the writes that wait).

    A write holding an id that is ``stored`` is refused whole. A write that shares an id with
    an earlier write going in now waits for that write's outcome (the caller's next round):
    refused if it committed, tried if it did not. Never is a write refused for one that did
    not happen: the answers are those of the writes run one after the other, in an order
    where a write that waited comes after the one it waited for."""
    known = set(stored)
    taken: set[int] = set()
    accepted: list[Waiting] = []
    refused: dict[Waiting, list[int]] = {}
    waiting_next: list[Waiting] = []
    for waiting in batch:
        clash = sorted(i for i in waiting.ids if i in known)
        if clash:
            refused[waiting] = clash
        elif not taken.isdisjoint(waiting.ids):
            waiting_next.append(waiting)
        else:
            accepted.append(waiting)
            taken.update(waiting.ids)
    return accepted, refused, waiting_next


async def commit_in_rounds(batch: list[Waiting],
                           commit_round: Callable[[list[Waiting]], Awaitable[set[int]]],
                           clash: Callable[[list[int]], BaseException]) -> None:
    """Settle one batch in rounds. Each round ``commit_round`` commits writes with no id in
    common and returns the ids it found stored or committed; a write that waited is refused
    with ``clash(ids)`` if one of its ids is among those (no round trip), or goes in next.
    Usually one round: a second only when writes of a batch share an id."""
    known: set[int] = set()
    pending = batch
    while pending:
        accepted, refused, pending = sort_out(pending, known)
        for waiting, ids in refused.items():
            waiting.fail(clash(ids))
        if accepted:
            known |= await commit_round(accepted)


class GroupCommitter:
    def __init__(self, locks: ShardLocks,
                 commit: Callable[[str, list[Waiting]], Awaitable[None]], *,
                 max_rows: int, max_bytes: int) -> None:
        self.locks = locks
        self.commit = commit  # resolves every write of the batch; the caller holds the lock
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._queues: dict[str, deque[Waiting]] = {}
        self._drainers: dict[str, asyncio.Task[None]] = {}

    async def write(self, shard: str, rows: list[Row]) -> int:
        """Queue ``rows`` for ``shard``; returns the rows written once its batch committed, or
        raises what refused or failed it."""
        waiting = Waiting(rows)
        self._queues.setdefault(shard, deque()).append(waiting)
        if shard not in self._drainers:
            self._drainers[shard] = asyncio.create_task(self._drain(shard),
                                                        name=f"group-commit-{shard}")
        return await waiting.answer

    async def _drain(self, shard: str) -> None:
        queue = self._queues[shard]
        try:
            while queue:
                batch: list[Waiting] = []
                try:
                    async with self.locks.hold([shard]):
                        batch = take_batch(queue, self.max_rows, self.max_bytes)
                        await self.commit(shard, batch)
                except BaseException as exc:  # each write of the batch is told, none hangs
                    told = exc if isinstance(exc, Exception) else Unavailable(
                        "<Error> The balancer is stopping: nothing written")
                    for waiting in batch or list(queue):
                        waiting.fail(told)
                    if not batch:  # the lock could not be had: every waiting write is told
                        queue.clear()
                    if not isinstance(exc, Exception):
                        raise
                for waiting in batch:  # a commit that forgot one is a bug, not a hang
                    waiting.fail(RuntimeError("group commit left a write unanswered"))
        finally:
            del self._drainers[shard]
