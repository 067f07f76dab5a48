"""This server's replicas of its shards, each the pure core (``dslab.replication``) driven by
I/O: the journal, the peers, the heartbeat timer and the shard's rows.

One ``ReplicaHost`` per shard. Every call into the core runs on the event loop with no await
inside, so the core needs no lock. Each call's ``Ready`` joins a queue that one flusher task
works through, in order (etcd's loop around its ``Ready``):

1. every ``Ready`` queued so far is journaled in one go (``Journal.persist_all``: group
   commit, many entries per journal flush);
2. only then do their messages leave: replies go back to whoever asked (in the HTTP answer),
   the primary's appends go to each peer, one request at a time per peer, merged while
   they wait (``replication/outbox.py``);
3. committed entries are applied to the shard's rows in log order, and the applied index
   recorded. A proposal is answered when its entry is applied here.

A journal that fails leaves the core ahead of the disk: the host drops the core, fails what
waited, and the next call starts it again from the journal, as a restart would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..replication import Append, Appoint, Message, NotPrimary, Ready, Replica
from ..replication.outbox import coalesce
from .journal import Journal

__all__ = ["ReplicaHost", "NotCommitted", "NotPrimary", "Transport", "Applier", "HostState"]

log = logging.getLogger("dslab.shard.replicas")

Transport = Callable[[str, Message], Awaitable[list[Message]]]
"""Send a message to a peer at ``host:port``; its replies (raises on a lost exchange)."""

Applier = Callable[[str], Awaitable[Any]]
"""Apply a committed command to the shard's rows; its result answers the proposal."""


class NotCommitted(Exception):
    """A proposal whose outcome is unknown here: this replica stepped down, or its entry was
    replaced by another primary's. The change may or may not be in the log for good."""


@dataclass(frozen=True)
class HostState:
    """What ``GET /repl/state`` shows of one replica."""

    shard: str
    role: str
    term: int
    primary: str | None
    commit: int
    applied: int
    last_index: int
    members: tuple[str, ...] = ()
    match: Mapping[str, int] = field(default_factory=dict)


@dataclass
class _Queued:
    ready: Ready
    reply_to: str | None
    done: asyncio.Future[list[Message]]


class ReplicaHost:
    def __init__(self, name: str, shard: str, journal: Journal, apply: Applier,
                 transport: Transport, *, heartbeat_interval: float = 0.1,
                 max_batch: int = 256) -> None:
        self.name = name
        self.shard = shard
        self.journal = journal
        self.apply = apply
        self.transport = transport
        self.heartbeat_interval = heartbeat_interval
        self.max_batch = max_batch
        self.peers: dict[str, str] = {}
        self._replica: Replica | None = None
        self._starting: asyncio.Lock = asyncio.Lock()
        self._queue: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None
        self._waiting: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._readers: list[tuple[int, asyncio.Future[None]]] = []  # (index, until applied)
        self._outbox: dict[str, list[Message]] = {}
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._heartbeats: asyncio.Task[None] | None = None
        self._closed = False

    # ---- the server's calls ----------------------------------------------------------------
    async def receive(self, message: Message, peers: Mapping[str, str] | None = None
                      ) -> list[Message]:
        """A message from the manager or the primary; the replies to its sender, once what
        they promise is journaled."""
        replica = await self._core()
        if isinstance(message, Appoint) and peers:
            self.peers = dict(peers)
        ready = replica.step(message)
        self._roles_changed(replica)
        return await self._submit(ready, reply_to=message.src)

    async def propose(self, command: str, timeout: float) -> Any:
        """A change at the primary: its result once committed and applied here. Raises
        ``NotPrimary``, or ``NotCommitted`` when the outcome is unknown (also after
        ``timeout`` seconds without a majority)."""
        replica = await self._core()
        entry, ready = replica.propose(command)  # NotPrimary on a secondary
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[entry.index] = (entry.term, waiter)
        self._submit(ready)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            raise NotCommitted(f"{self.shard}: entry {entry.index} not committed within "
                               f"{timeout:g} s (no majority answering?)") from None

    async def readable(self, timeout: float) -> None:
        """Return once this primary's rows hold every change committed before the call: once
        its term's first entry (the no-op) and the commit index known now are applied.
        Raises ``NotPrimary``, or ``NotCommitted`` after ``timeout`` seconds."""
        replica = await self._core()
        if not replica.is_primary:
            raise NotPrimary(f"{self.name} is not the primary of {self.shard} "
                             f"(term {replica.term})")
        target = replica.commit
        if replica.log.term_at(replica.commit) != replica.term:
            target = replica.log.last_index  # the no-op is at or before it
        if replica.applied >= target:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._readers.append((target, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            raise NotCommitted(f"{self.shard}: index {target} not applied within {timeout:g} s "
                               f"(no majority answering?)") from None

    async def state(self) -> HostState:
        replica = await self._core()
        match = {p: pr.match for p, pr in replica.progress.items()} if replica.is_primary else {}
        return HostState(self.shard, replica.role.value, replica.term, replica.primary,
                         replica.commit, replica.applied, replica.log.last_index,
                         replica.members, match)

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._flusher, self._heartbeats, *self._sending.values()) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_waiting("the server is stopping")

    # ---- the core, started from the journal ------------------------------------------------
    async def _core(self) -> Replica:
        if self._replica is not None:
            return self._replica
        async with self._starting:
            if self._replica is None:
                durable, applied = await self.journal.load()
                replica = Replica.restore(self.name, durable, min(applied, durable.commit),
                                          max_batch=self.max_batch)
                self._replica = replica
                self._submit(replica.heartbeat())  # applies what was committed, not applied
            return self._replica

    def _drop_core(self, why: str) -> None:
        self._replica = None
        self._fail_waiting(why)
        self._outbox.clear()

    def _roles_changed(self, replica: Replica) -> None:
        if replica.is_primary and (self._heartbeats is None or self._heartbeats.done()):
            self._heartbeats = asyncio.ensure_future(self._beat(replica))
        if not replica.is_primary and self._waiting:
            self._fail_waiting(f"{self.name} is no longer the primary of {self.shard}")

    def _fail_waiting(self, why: str) -> None:
        for _, waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(NotCommitted(f"{why}: the change may or may not commit"))
        self._waiting.clear()
        for _, reader in self._readers:
            if not reader.done():
                reader.set_exception(NotPrimary(f"{why}: read it again"))
        self._readers = []

    async def _beat(self, replica: Replica) -> None:
        """The primary's heartbeats: carry the commit index, resend what was lost."""
        while not self._closed and replica is self._replica and replica.is_primary:
            await asyncio.sleep(self.heartbeat_interval)
            if replica is self._replica and replica.is_primary:
                self._submit(replica.heartbeat())

    # ---- the flusher: journal, then send, then apply --------------------------------------
    def _submit(self, ready: Ready, reply_to: str | None = None
                ) -> asyncio.Future[list[Message]]:
        done: asyncio.Future[list[Message]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(ready, reply_to, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return done

    async def _flush(self) -> None:
        while self._queue and not self._closed:
            batch, self._queue = self._queue, []
            try:
                await self.journal.persist_all([q.ready for q in batch])
            except Exception as exc:
                log.warning("%s %s: the journal failed (%s); starting again from it",
                            self.name, self.shard, exc)
                self._drop_core(f"the journal failed: {exc}")
                for queued in batch + self._queue:
                    if not queued.done.done():
                        queued.done.set_exception(NotCommitted(f"journal failed: {exc}"))
                self._queue = []
                return
            for queued in batch:
                replies = []
                for message in queued.ready.messages:
                    if message.to == queued.reply_to:
                        replies.append(message)
                    else:
                        self._send(message)
                if not queued.done.done():
                    queued.done.set_result(replies)
            await self._apply([e for q in batch for e in q.ready.apply])

    async def _apply(self, entries: list[Any]) -> None:
        for entry in entries:
            result: Any = None
            if entry.command is not None:
                try:
                    result = await self.apply(entry.command)
                except Exception as exc:  # the engine failed: the entry stays in the log
                    log.warning("%s %s: applying entry %d failed: %s", self.name, self.shard,
                                entry.index, exc)
                    self._drop_core(f"applying failed: {exc}")  # re-applied from the journal
                    return
            term_and_waiter = self._waiting.pop(entry.index, None)
            if term_and_waiter is not None:
                term, waiter = term_and_waiter
                if waiter.done():
                    pass
                elif term != entry.term:
                    waiter.set_exception(NotCommitted(
                        f"entry {entry.index} was replaced by another primary's"))
                else:
                    waiter.set_result(result)
        if entries:
            applied = entries[-1].index
            still = []
            for index, reader in self._readers:
                if index <= applied:
                    if not reader.done():
                        reader.set_result(None)
                else:
                    still.append((index, reader))
            self._readers = still
            try:
                await self.journal.set_applied(applied)
            except Exception as exc:  # re-applied after a restart: applying may repeat
                log.warning("%s %s: recording the applied index failed: %s", self.name,
                            self.shard, exc)

    # ---- the primary's outbox: one request in flight per peer -----------------------------
    def _send(self, message: Message) -> None:
        self._outbox.setdefault(message.to, []).append(message)
        task = self._sending.get(message.to)
        if task is None or task.done():
            self._sending[message.to] = asyncio.ensure_future(self._drain(message.to))

    async def _drain(self, peer: str) -> None:
        while self._outbox.get(peer) and not self._closed:
            queued, self._outbox[peer] = self._outbox[peer], []
            for message in coalesce(queued):
                address = self.peers.get(peer)
                if address is None:
                    continue  # whom to reach is not known: lost, as on a network
                try:
                    replies = await self.transport(address, message)
                except Exception as exc:  # lost: the heartbeats resend what matters
                    log.debug("%s -> %s lost: %s", self.name, peer, exc)
                    if isinstance(message, Append):
                        await asyncio.sleep(self.heartbeat_interval)  # no busy loop on a dead peer
                    continue
                replica = self._replica
                if replica is None:
                    return
                for reply in replies:
                    self._submit(replica.step(reply))
                    self._roles_changed(replica)

