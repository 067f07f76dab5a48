"""This server's replica of one shard: the pure core (``dslab.replication``) driven by I/O,
the journal, the peers, the heartbeat timer and the shard's rows.

Every call into the core runs on the event loop with no await inside, so the core needs no
lock. The primary's appends leave at once, to each peer one request at a time, merged while
they wait (``replication/outbox.py``): its secondaries journal an entry while it does (Raft's
thesis, 10.2.1), since the core counts the primary toward a majority only through what its
journal holds. Every ``Ready`` then joins a queue that one flusher task works through, in
order (etcd's loop around its ``Ready``):

1. every ``Ready`` queued so far is journaled in one go (``Journal.persist_all``: group
   commit, many entries per journal flush), and the core is told how far its journal now
   goes (``Replica.persisted``). A commit index is journaled only now and then: Raft needs
   only the term and the entries on disk, and a restart learns the commit index again from
   the primary;
2. only then do their other messages leave: replies go back to whoever asked (in the HTTP
   answer), in the order asked;
3. committed entries are answered (a majority journaled them: the outcome is the log's, and
   the change's result was decided before it was logged), then go to the applier task, which
   applies them to the shard's rows in log order while the flusher journals the next ones.
   A secondary gathers what it applies for half a heartbeat interval first, so that one
   engine write holds many entries (its rows serve only ``any`` reads, which may be behind);
   the applied index is recorded only now and then (``_COMMIT_EVERY``), as a restart applies
   again from it whatever it was.
   The apply is off the answer's path: a read at the primary waits until its rows hold every
   entry committed when the read began (``readable``), and a change touching a row waits for
   the entries before it that touch the same row (``changes.py``).

A journal that fails leaves the core ahead of the disk: the host drops the core, fails what
waited, and the next call starts it again from the journal, as a restart would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..replication import Append, Appoint, Entry, Message, NotPrimary, Ready, Replica
from ..replication.outbox import coalesce
from .journal import Journal

__all__ = ["ReplicaHost", "NotCommitted", "NotPrimary", "Transport", "Applier", "HostState"]

log = logging.getLogger("dslab.shard.replicas")

Transport = Callable[[str, Message], Awaitable[list[Message]]]
"""Send a message to a peer at ``host:port``; its replies (raises on a lost exchange)."""

Applier = Callable[[list[str]], Awaitable[None]]
"""Apply committed commands, in order, to the shard's rows."""

_COMMIT_EVERY = 256  # entries between two journaled commit (and applied) indexes


class NotCommitted(Exception):
    """A change whose outcome is unknown here: this replica stepped down, its entry was
    replaced by another primary's, or no majority answered in time. It may or may not be in
    the log for good."""


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
        self.applied = 0  # the last entry the shard's rows hold (the core's runs ahead)
        self._replica: Replica | None = None
        self._starting = asyncio.Lock()
        self._queue: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None
        self._to_apply: list[Entry] = []
        self._applier: asyncio.Task[None] | None = None
        self._waiting: dict[int, tuple[int, asyncio.Future[None]]] = {}  # index: term, waiter
        self._until: list[tuple[int, asyncio.Future[None]]] = []  # (index, until applied)
        self._saved_term = 0
        self._saved_commit = 0
        self._saved_applied = 0
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

    async def append(self, command: str) -> tuple[int, asyncio.Future[None]]:
        """Log a command at the primary: its index, and a future done once it is committed
        (``committed`` waits for it). Raises ``NotPrimary``."""
        replica = await self._core()
        entry, ready = replica.propose(command)  # NotPrimary on a secondary
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[entry.index] = (entry.term, waiter)
        self._submit(ready)
        return entry.index, waiter

    async def committed(self, index: int, waiter: asyncio.Future[None], timeout: float) -> None:
        """Wait until ``append``'s entry is committed (journaled by a majority); ``NotCommitted``
        if it cannot be told within ``timeout`` seconds, or never will be."""
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            raise NotCommitted(f"{self.shard}: entry {index} not committed within "
                               f"{timeout:g} s (no majority answering?)") from None

    async def readable(self, timeout: float) -> None:
        """Return once this primary's rows hold every change committed before the call: its
        term's first entry (the no-op) and the commit index known now are applied. Raises
        ``NotPrimary``, or ``NotCommitted`` after ``timeout`` seconds."""
        replica = await self._core()
        if not replica.is_primary:
            raise NotPrimary(f"{self.name} is not the primary of {self.shard} "
                             f"(term {replica.term})")
        target = replica.commit
        if replica.log.term_at(replica.commit) != replica.term:
            target = replica.log.last_index  # the no-op is at or before it
        await self.until_applied(target, timeout)

    async def decidable(self, timeout: float) -> int:
        """The primary's term, once its rows hold every entry of an earlier term (its no-op
        is applied): from then on, a change is decided against the rows and the entries this
        primary logged in this term (``changes.py`` tracks those). Raises ``NotPrimary``, or
        ``NotCommitted`` after ``timeout`` seconds."""
        replica = await self._core()
        if not replica.is_primary:
            raise NotPrimary(f"{self.name} is not the primary of {self.shard} "
                             f"(term {replica.term})")
        term = replica.term
        await self.until_applied(replica.term_start, timeout)
        return term

    async def until_applied(self, index: int, timeout: float) -> None:
        """Return once the shard's rows hold entry ``index``; ``NotCommitted`` after
        ``timeout`` seconds, ``NotPrimary`` if this replica steps down meanwhile."""
        if self.applied >= index:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._until.append((index, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            raise NotCommitted(f"{self.shard}: index {index} not applied within {timeout:g} s "
                               f"(no majority answering?)") from None

    async def state(self) -> HostState:
        replica = await self._core()
        match = {p: pr.match for p, pr in replica.progress.items()} if replica.is_primary else {}
        return HostState(self.shard, replica.role.value, replica.term, replica.primary,
                         replica.commit, self.applied, replica.log.last_index,
                         replica.members, match)

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._flusher, self._applier, self._heartbeats,
                             *self._sending.values()) if t]
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
                applied = min(applied, durable.commit)
                replica = Replica.restore(self.name, durable, applied, max_batch=self.max_batch)
                self._replica = replica
                self._saved_term, self._saved_commit = durable.term, durable.commit
                self.applied = self._saved_applied = applied
                self._submit(replica.heartbeat())  # applies what was committed, not applied
            return self._replica

    def _drop_core(self, why: str) -> None:
        self._replica = None
        self._fail_waiting(why)
        self._outbox.clear()
        self._to_apply = []

    def _roles_changed(self, replica: Replica) -> None:
        if replica.is_primary and (self._heartbeats is None or self._heartbeats.done()):
            self._heartbeats = asyncio.ensure_future(self._beat(replica))
        if not replica.is_primary and (self._waiting or self._until):
            self._fail_waiting(f"{self.name} is no longer the primary of {self.shard}")

    def _fail_waiting(self, why: str) -> None:
        for _, waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(NotCommitted(f"{why}: the change may or may not commit"))
        self._waiting.clear()
        for _, waiter in self._until:
            if not waiter.done():
                waiter.set_exception(NotPrimary(f"{why}: ask again"))
        self._until = []

    async def _beat(self, replica: Replica) -> None:
        """The primary's heartbeats: carry the commit index, resend what was lost."""
        while not self._closed and replica is self._replica and replica.is_primary:
            await asyncio.sleep(self.heartbeat_interval)
            if replica is self._replica and replica.is_primary:
                self._submit(replica.heartbeat())

    # ---- the flusher: journal, then send, then hand to the applier ------------------------
    def _submit(self, ready: Ready, reply_to: str | None = None
                ) -> asyncio.Future[list[Message]]:
        for message in ready.messages:
            if isinstance(message, Append) and message.to != reply_to:
                self._send(message)  # before the journal: the core counts this replica later
        done: asyncio.Future[list[Message]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(ready, reply_to, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return done

    def _durable_part(self, ready: Ready) -> Ready:
        """What of ``ready`` must be journaled: a new term always; a commit index only now and
        then (every ``_COMMIT_EVERY`` entries), so that a restart has less to apply again."""
        hard = ready.hard_state
        if hard is None:
            return ready
        if hard.term == self._saved_term and hard.commit < self._saved_commit + _COMMIT_EVERY:
            return dataclasses.replace(ready, hard_state=None)
        self._saved_term, self._saved_commit = hard.term, hard.commit
        return ready

    async def _flush(self) -> None:
        while self._queue and not self._closed:
            batch, self._queue = self._queue, []
            replica = self._replica
            durable = [self._durable_part(q.ready) for q in batch]
            try:
                await self.journal.persist_all([r for r in durable if r.must_persist])
            except Exception as exc:
                log.warning("%s %s: the journal failed (%s); starting again from it",
                            self.name, self.shard, exc)
                self._drop_core(f"the journal failed: {exc}")
                for queued in batch + self._queue:
                    if not queued.done.done():
                        queued.done.set_exception(NotCommitted(f"journal failed: {exc}"))
                self._queue = []
                return
            last = next((q.ready.append[-1] for q in reversed(batch) if q.ready.append), None)
            if last is not None and replica is not None and replica is self._replica:
                self._submit(replica.persisted(last.index, last.term))  # may commit
            for queued in batch:
                replies = []
                for message in queued.ready.messages:
                    if message.to == queued.reply_to:
                        replies.append(message)
                    elif not isinstance(message, Append):
                        self._send(message)
                if not queued.done.done():
                    queued.done.set_result(replies)
                self._answer_committed(queued.ready.apply)
                self._to_apply.extend(queued.ready.apply)
            if self._to_apply and (self._applier is None or self._applier.done()):
                self._applier = asyncio.ensure_future(self._apply_all())

    def _answer_committed(self, entries: Sequence[Entry]) -> None:
        """Committed entries answer the changes that logged them: done if the committed entry
        is the one logged (same term), else replaced by another primary's."""
        for entry in entries:
            term_and_waiter = self._waiting.pop(entry.index, None)
            if term_and_waiter is not None and not term_and_waiter[1].done():
                term, waiter = term_and_waiter
                if term == entry.term:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(NotCommitted(
                        f"entry {entry.index} was replaced by another primary's"))

    async def _apply_all(self) -> None:
        while self._to_apply and not self._closed:
            if self._replica is not None and not self._replica.is_primary:
                await asyncio.sleep(self.heartbeat_interval / 2)  # gather more to apply
            replica = self._replica
            entries, self._to_apply = self._to_apply, []
            if not entries:
                return
            try:
                await self.apply([e.command for e in entries if isinstance(e.command, str)])
            except Exception as exc:  # the engine failed: the entries stay in the log
                log.warning("%s %s: applying entries %d-%d failed: %s", self.name, self.shard,
                            entries[0].index, entries[-1].index, exc)
                if replica is self._replica:
                    self._drop_core(f"applying failed: {exc}")  # applied again from the log
                return
            self.applied = entries[-1].index
            still = []
            for index, waiter in self._until:
                if index <= self.applied:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    still.append((index, waiter))
            self._until = still
            if self.applied < self._saved_applied + _COMMIT_EVERY:
                continue
            self._saved_applied = self.applied
            try:
                await self.journal.set_applied(self.applied)
            except Exception as exc:  # it may lag: a restart applies again from it
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
                    await asyncio.sleep(self.heartbeat_interval)  # no busy loop on a dead peer
                    continue
                replica = self._replica
                if replica is None:
                    return
                for reply in replies:
                    self._submit(replica.step(reply))
                    self._roles_changed(replica)
