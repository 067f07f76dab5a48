"""The phase-fair reader-writer lock behind linearizable reads (pure asyncio, no server)."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dslab.db.rwlock import PhaseFairLock


async def _tick(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_readers_that_waited_for_a_writer_go_before_the_next_writer():
    async def scenario():
        lock, order = PhaseFairLock(), []
        await lock.acquire_write()

        async def read(name):
            await lock.acquire_read()
            order.append(name)
            await _tick()
            lock.release_read()

        async def write(name):
            await lock.acquire_write()
            order.append(name)
            lock.release_write()

        tasks = [asyncio.create_task(read("r1")), asyncio.create_task(write("w2")),
                 asyncio.create_task(read("r2"))]
        await _tick()
        assert order == []  # all wait for the writer in
        lock.release_write()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario()) == ["r1", "r2", "w2"]


def test_a_writer_waits_only_for_the_readers_already_in():
    async def scenario():
        lock, order = PhaseFairLock(), []
        await lock.acquire_read()

        async def write():
            await lock.acquire_write()
            order.append("w")
            await _tick()
            lock.release_write()

        async def late_read():
            await lock.acquire_read()
            order.append("late")
            lock.release_read()

        w = asyncio.create_task(write())
        await _tick()
        late = asyncio.create_task(late_read())
        await _tick()
        assert order == []  # the late reader queues behind the waiting writer
        lock.release_read()
        await asyncio.gather(w, late)
        return order

    assert asyncio.run(scenario()) == ["w", "late"]


def test_reads_are_not_starved_by_writers_that_always_wait():
    """Four writers take the lock back to back; a reader still gets in after at most one
    writer's turn (aiorwlock's writer preference kept it out for as long as writers came)."""
    async def scenario():
        lock, turns, stop = PhaseFairLock(), [], False

        async def writer(name):
            while not stop:
                await lock.acquire_write()
                turns.append(name)
                await _tick(2)
                lock.release_write()

        writers = [asyncio.create_task(writer(f"w{k}")) for k in range(4)]
        await _tick(5)
        before = len(turns)
        await lock.acquire_read()
        waited = len(turns) - before
        lock.release_read()
        stop = True
        await asyncio.gather(*writers)
        return waited

    assert asyncio.run(scenario()) <= 1


def test_a_writer_given_up_lets_the_readers_behind_it_in():
    async def scenario():
        lock = PhaseFairLock()
        await lock.acquire_read()
        w = asyncio.create_task(lock.acquire_write())
        await _tick()
        r = asyncio.create_task(lock.acquire_read())
        await _tick()
        assert not r.done()
        w.cancel()
        await asyncio.gather(w, return_exceptions=True)
        await asyncio.wait_for(r, 1)  # no writer waits any more: the reader joins
        return lock.readers

    assert asyncio.run(scenario()) == 2


def test_waiters_cancelled_after_they_were_let_in_give_their_turn_back():
    async def scenario():
        lock = PhaseFairLock()
        await lock.acquire_write()
        r = asyncio.create_task(lock.acquire_read())
        w = asyncio.create_task(lock.acquire_write())
        await _tick()
        lock.release_write()  # the reader is let in...
        r.cancel()  # ...and cancelled before it ran
        await asyncio.gather(r, return_exceptions=True)
        await asyncio.wait_for(w, 1)  # so the writer gets the lock
        w_cancelled_after_handoff = asyncio.create_task(lock.acquire_write())
        await _tick()
        lock.release_write()
        w_cancelled_after_handoff.cancel()
        await asyncio.gather(w_cancelled_after_handoff, return_exceptions=True)
        return lock.write_locked, lock.readers

    assert asyncio.run(scenario()) == (False, 0)


def test_the_writer_may_read_and_write_what_it_holds():
    async def scenario():
        lock = PhaseFairLock()
        await lock.acquire_write()
        assert await lock.acquire_read() is False  # passes through: nothing to release
        await lock.acquire_write()
        lock.release_write()
        assert lock.write_locked
        lock.release_write()
        return lock.write_locked

    assert asyncio.run(scenario()) is False


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32))
def test_never_a_writer_beside_anyone_whatever_the_interleaving(seed):
    """Random readers and writers, random holds, some cancelled while waiting or holding:
    a writer is always alone, and at the end the lock is free."""
    rng = random.Random(seed)

    async def scenario():
        lock, inside = PhaseFairLock(), {"r": 0, "w": 0}

        async def user(write: bool, ticks: int) -> None:
            if write:
                await lock.acquire_write()
            else:
                await lock.acquire_read()
            try:
                inside["w" if write else "r"] += 1
                assert inside["w"] <= 1 and not (inside["w"] and inside["r"])
                await _tick(ticks)
            finally:
                inside["w" if write else "r"] -= 1
                lock.release_write() if write else lock.release_read()

        tasks = []
        for _ in range(30):
            tasks.append(asyncio.create_task(user(rng.random() < 0.4, rng.randint(0, 3))))
            await _tick(rng.randint(0, 2))
            if rng.random() < 0.15:
                rng.choice(tasks).cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results), results
        return lock.write_locked, lock.readers

    assert asyncio.run(scenario()) == (False, 0)


def test_only_the_writer_task_passes_through():
    async def scenario():
        lock = PhaseFairLock()
        await lock.acquire_write()
        other = asyncio.create_task(lock.acquire_read())
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await asyncio.shield(other)
        lock.release_write()
        assert await other is True
        return lock.readers

    assert asyncio.run(scenario()) == 1
