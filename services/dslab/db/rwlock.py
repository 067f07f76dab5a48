"""A phase-fair reader-writer lock for asyncio (Brandenburg and Anderson's phase-fair
ordering): readers share it, a writer holds it alone, and the two take turns.

- A writer waits only for the readers already in; readers that arrive while a writer waits
  queue behind it.
- When a writer leaves, every reader waiting then goes in together, before the next writer.

So neither side starves: a reader waits at most for one writer (the one in, or the one
waiting), a writer at most for one phase of readers. (aiorwlock, tried first, prefers
writers outright: under group commit a shard nearly always has a batch waiting, and reads
waited seconds.) The writer is re-entrant, and may read what it holds: the task that holds
the lock exclusively passes straight through ``acquire_read``/``acquire_write``.
Timeouts are the caller's (``asyncio.timeout``); a waiter cancelled after it was let in gives
its turn back.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["PhaseFairLock"]


class _ReadPhase:
    """The readers waiting for the current writer to leave: let in together."""

    def __init__(self) -> None:
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting = 0


class PhaseFairLock:
    def __init__(self) -> None:
        self._readers = 0
        self._writer: object | None = None  # the holding task, or _HANDED until it resumes
        self._depth = 0  # the writer's re-entries
        self._writers: deque[asyncio.Future[None]] = deque()
        self._phase: _ReadPhase | None = None

    @property
    def write_locked(self) -> bool:
        return self._writer is not None

    @property
    def readers(self) -> int:
        return self._readers

    def _owner(self) -> bool:
        return self._writer is not None and self._writer is asyncio.current_task()

    async def acquire_read(self) -> bool:
        """Returns whether a shared hold was taken (False: the writer reading its own)."""
        if self._owner():
            return False
        if self._writer is None and not self._writers:
            self._readers += 1
            return True
        phase = self._phase = self._phase or _ReadPhase()
        phase.waiting += 1
        try:
            await asyncio.shield(phase.open)
        except asyncio.CancelledError:
            if phase.open.done():  # let in as it was cancelled: give the turn back
                self.release_read()
            else:
                phase.waiting -= 1
            raise
        return True

    def release_read(self) -> None:
        self._readers -= 1
        self._settle()

    async def acquire_write(self) -> None:
        me = asyncio.current_task()
        if self._writer is not None and self._writer is me:
            self._depth += 1
            return
        if self._writer is None and self._readers == 0 and not self._writers:
            self._writer, self._depth = me, 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writers.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # handed the lock as it was cancelled
                self._writer, self._depth = me, 1
                self.release_write()
            else:
                if turn in self._writers:
                    self._writers.remove(turn)
                self._settle()
            raise
        self._writer, self._depth = me, 1

    def release_write(self) -> None:
        self._depth -= 1
        if self._depth:
            return
        self._writer = None
        if not self._admit_readers():  # the readers that waited go first
            self._settle()

    def _settle(self) -> None:
        """After a change: hand the lock to the next writer once no reader holds it; with no
        writer holding or waiting, let every waiting reader in."""
        if self._writer is not None:
            return
        while self._writers and self._readers == 0:
            turn = self._writers.popleft()
            if not turn.done():  # (one cancelled meanwhile is skipped)
                self._writer = _HANDED  # nobody slips in before the writer resumes
                turn.set_result(None)
                return
        if not self._writers:
            self._admit_readers()

    def _admit_readers(self) -> bool:
        """Let in every reader waiting; False if there were none."""
        phase, self._phase = self._phase, None
        if phase is None or phase.waiting == 0:
            return False
        self._readers += phase.waiting
        phase.open.set_result(None)
        return True


_HANDED = object()
