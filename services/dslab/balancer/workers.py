"""The primary's side of ``--workers W``: W worker processes that proxy, kept running and told
every change of membership.

The primary keeps what must be one: the replicas (keeper, heartbeats, supervisor), their ring
and the admin changes. Each worker (``worker.py``) accepts on the balancer's port (SO_REUSEPORT:
the kernel spreads new connections over the workers) and routes over its copy of the ring with
its own upstream connections.

    publish()   sends the whole membership to every worker and returns once each has applied
                it (a worker that does not within ``ack_timeout`` is killed: its successor
                starts from the newest membership). An /add or /rm that a worker received is
                done here, published, and only then answered: whichever worker takes the next
                request routes over the new ring.
    changed()   the same, without waiting: the keeper evicted or replaced a replica.

A worker that dies is started again (backing off while it keeps dying young); its metrics
files stay (what it served still counts) and its row of loads is zeroed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import multiprocess

from ..common.errors import ApiError
from .channel import Ack, Call, Hello, Listening, Membership, Reply, Suspect, receive, write_now
from .membership import ReplicaSet
from .sharedload import SLOTS, zero_row

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)

_YOUNG = 2.0  # seconds: a worker that dies younger than this is restarted after a backoff
_MAX_BACKOFF = 5.0


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    writer: asyncio.StreamWriter
    acked: int = 0
    calls: set[asyncio.Task[None]] = field(default_factory=set)


class WorkerPool:
    def __init__(self, replicas: ReplicaSet, hello: Callable[[int], Hello], count: int, *,
                 state_dir: Path, log_level: str = "INFO", ack_timeout: float = 10.0) -> None:
        self.replicas = replicas
        self.hello = hello
        self.count = count
        self.state_dir = state_dir
        self.log_level = log_level
        self.ack_timeout = ack_timeout
        self.version = 0
        self.restarts = 0
        self._workers: dict[int, _Worker] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._acked = asyncio.Condition()
        self._slots: dict[str, int] = {}
        self._next_slot = 1
        self._stopping = False
        self._pending: asyncio.Task[None] | None = None

    # ---- membership -------------------------------------------------------------------------
    def snapshot(self) -> Membership:
        keeper = self.replicas.keeper
        addresses: dict[str, tuple[str, int]] = {}
        for name in keeper.serving():
            pool = keeper.pool(name)
            if pool is not None:
                addresses[name] = (pool.host, pool.port)
        self._slots = {name: self._slots.get(name) or self._new_slot() for name in addresses}
        self.version += 1
        return Membership(self.version, self.replicas.ring, addresses, dict(self._slots),
                          evicted=keeper.evicted(), nodes=keeper.placement(),
                          replacements=keeper.replacements,
                          evictions=keeper.evictions)

    def _new_slot(self) -> int:
        taken = set(self._slots.values())
        while self._next_slot in taken:
            self._next_slot = self._next_slot % (SLOTS - 1) + 1
        slot = self._next_slot
        self._next_slot = self._next_slot % (SLOTS - 1) + 1
        return slot

    async def publish(self) -> None:
        """Every live worker has the membership of now when this returns."""
        membership = self.snapshot()
        workers = list(self._workers.values())
        for worker in workers:  # written in one step: no older membership can follow it
            write_now(worker.writer, membership)

        def applied() -> bool:
            return all(w.acked >= membership.version or self._workers.get(w.index) is not w
                       for w in workers)
        async with self._acked:
            try:
                await asyncio.wait_for(self._acked.wait_for(applied), self.ack_timeout)
            except TimeoutError:
                for worker in workers:
                    if worker.acked < membership.version:
                        log.error("worker %d did not apply membership %d within %g s: "
                                  "killed, its successor starts from the newest", worker.index,
                                  membership.version, self.ack_timeout)
                        with contextlib.suppress(ProcessLookupError):
                            worker.process.kill()

    def changed(self) -> None:
        """The keeper changed the ring: publish soon, coalescing a burst into one."""
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._publish_soon())

    async def _publish_soon(self) -> None:
        await asyncio.sleep(0)
        await self.publish()

    # ---- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every worker; returns once each listens. Raises if one dies first."""
        first: list[asyncio.Future[None]] = []
        for index in range(self.count):
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            first.append(ready)
            self._tasks.append(asyncio.ensure_future(self._keep(index, ready)))
        await asyncio.gather(*first)

    async def close(self) -> None:
        """SIGTERM every worker and wait for it (SIGKILL after 10 s)."""
        self._stopping = True
        workers = list(self._workers.values())
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                await asyncio.wait_for(worker.process.wait(), 10)
            except TimeoutError:
                log.error("worker %d ignored SIGTERM: killed", worker.index)
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pending is not None:
            self._pending.cancel()

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers.values()]

    async def _keep(self, index: int, first: asyncio.Future[None]) -> None:
        """Run worker ``index``, and again each time it dies, until the pool closes."""
        backoff = 0.25
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._run_one(index, first)
            except Exception as exc:  # noqa: BLE001 - a worker's failure is logged, it restarts
                if not first.done():
                    first.set_exception(exc)
                    return
                log.error("worker %d failed: %s", index, exc)
            if self._stopping:
                return
            if not first.done():
                first.set_exception(RuntimeError(f"worker {index} exited before it listened"))
                return
            self.restarts += 1
            if time.monotonic() - started < _YOUNG:
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, _MAX_BACKOFF)
            else:
                backoff = 0.25

    async def _run_one(self, index: int, first: asyncio.Future[None]) -> None:
        mine, theirs = socket.socketpair()
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.state_dir)}
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "dslab.balancer.worker", "--channel-fd",
                str(theirs.fileno()), "--log-level", self.log_level, pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL, env=env)
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=mine)
        worker = _Worker(index, process, writer)
        self._workers[index] = worker
        try:
            write_now(writer, self.hello(index))
            write_now(writer, self.snapshot())
            await self._listen_to(worker, reader, first)
        finally:
            if self._workers.get(index) is worker:
                del self._workers[index]
            writer.close()
            code = await process.wait()
            for task in worker.calls:
                task.cancel()
            async with self._acked:
                self._acked.notify_all()  # a publish waiting on it waits no more
            multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                process.pid, str(self.state_dir))
            zero_row(self.state_dir / "inflight", index)
            if not self._stopping:
                log.error("worker %d (pid %d) exited with %s: starting it again", index,
                          process.pid, code)

    async def _listen_to(self, worker: _Worker, reader: asyncio.StreamReader,
                         first: asyncio.Future[None]) -> None:
        while True:
            try:
                message = await receive(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # it exited
            if isinstance(message, Ack):
                async with self._acked:
                    worker.acked = max(worker.acked, message.version)
                    self._acked.notify_all()
            elif isinstance(message, Listening):
                if not first.done():
                    first.set_result(None)
            elif isinstance(message, Suspect):
                self.replicas.suspect(message.name, RuntimeError(message.why))
            elif isinstance(message, Call):
                task = asyncio.ensure_future(self._answer(worker, message))
                worker.calls.add(task)
                task.add_done_callback(worker.calls.discard)

    async def _answer(self, worker: _Worker, call: Call) -> None:
        try:
            if call.op == "add":
                names = await self.replicas.add(call.n, call.hostnames)
            else:
                _, names = await self.replicas.remove(call.n, call.hostnames)
            await self.publish()
            reply = Reply(call.call_id, names)
        except ApiError as exc:
            reply = Reply(call.call_id, None, exc.status, exc.message)
        except Exception:  # a bug: the worker answers as a single process would
            log.exception("%s failed", call)
            reply = Reply(call.call_id, None, 500, "<Error> Internal error: see the service's log")
        write_now(worker.writer, reply)
