"""The balancer as each shard's manager under ``--replication majority``: it runs the shard's
elections (``replication/election.py``, docs/replication.md says why it is the elector), with
its terms kept in the metadata store.

An election: a term above any used, made durable first (``Terms.allocate``, journaled); a
``Promise`` to every member, concurrently; once a majority promised, the most up-to-date
log among them is appointed, with every member's address so it can replicate. A member that
does not answer within the transport's timeout simply does not count. The manager remembers
the primary it appointed; the data path sends each shard's writes there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.write_concern import WriteConcern

from ..common.engine_errors import engine_errors
from ..common.errors import Unavailable
from ..replication import Appoint, Elector, ElectorOutput, Message

__all__ = ["Terms", "ShardManager", "Send"]

log = logging.getLogger("dslab.db.shardmanager")

Send = Callable[[str, Message, Mapping[str, str] | None], Awaitable[list[Message]]]
"""Send a message to the server at an address (with the peers' addresses, for an Appoint);
its replies."""


class Terms:
    """Each shard's highest term, in the metadata store. A term is allocated by one atomic,
    journaled increment before it is used, so no term is used twice, not even by two
    balancers running at once (a restart while the old process is paused, not dead): then
    they are as safe as two Raft candidates."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.collection = db.with_options(
            write_concern=WriteConcern(w=1, j=True))["ReplTermT"]

    async def allocate(self, shard: str) -> int:
        with engine_errors("Allocating a shard's term"):
            doc = await self.collection.find_one_and_update(
                {"_id": shard}, {"$inc": {"term": 1}}, upsert=True,
                return_document=ReturnDocument.AFTER)
        assert doc is not None  # upserted
        return int(doc["term"])


class ShardManager:
    def __init__(self, name: str, shard: str, terms: Terms, send: Send) -> None:
        self.name = name
        self.shard = shard
        self.terms = terms
        self.send = send
        self.elector: Elector | None = None
        self.primary: str | None = None
        self.elections = 0
        self._electing = asyncio.Lock()

    @property
    def term(self) -> int:
        return self.elector.term if self.elector else 0

    async def elect(self, members: Mapping[str, str | None]) -> str:
        """A new primary among ``members`` (name to ``host:port``; None: not reachable, but a
        member): its name, or a 503 when no majority promised or the one chosen did not
        accept."""
        async with self._electing:
            if self.elector is None:
                self.elector = Elector(self.name)
            elector = self.elector
            self.primary = None
            term = await self.terms.allocate(self.shard)
            while term <= elector.highest_seen:  # a term some replica holds: take a higher one
                term = await self.terms.allocate(self.shard)
            elector.term = elector.highest_seen = term - 1  # start() takes the next: ``term``
            out = elector.start(tuple(sorted(members)))
            assert out.persist_term == term  # allocated, so durable already
            self.elections += 1
            appointed = await self._deliver(out, members)
            if appointed is None:
                raise Unavailable(f"<Error> no primary for {self.shard} in term {elector.term}: "
                                  f"a majority of {len(members)} did not answer")
            self.primary = appointed
            log.info("%s: %s is primary of term %d", self.shard, appointed, elector.term)
            return appointed

    async def _deliver(self, out: ElectorOutput, members: Mapping[str, str | None]
                       ) -> str | None:
        """Send what the elector asks, feed back each reply as it comes, until it appoints
        (a majority's promises are enough: a member that is slow or gone is not waited for)
        or nothing is left in flight."""
        assert self.elector is not None
        elector = self.elector
        flying: dict[asyncio.Task[list[Message]], Message] = {}

        reachable = {name: address for name, address in members.items() if address is not None}

        def send(message: Message) -> None:
            address = members[message.to]
            if address is None:
                return  # a member not started: it does not answer
            peers = reachable if isinstance(message, Appoint) else None
            flying[asyncio.ensure_future(self.send(address, message, peers))] = message

        for message in out.messages:
            send(message)
        try:
            while flying:
                done, _ = await asyncio.wait(flying, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    message = flying.pop(task)
                    if task.exception() is not None:
                        log.debug("%s: %s to %s lost: %s", self.shard, type(message).__name__,
                                  message.to, task.exception())
                        continue  # lost: that member does not count
                    for reply in task.result():
                        step = elector.step(reply)
                        if step.appointed is not None:
                            return step.appointed
                        for next_message in step.messages:
                            send(next_message)
            return None
        finally:
            for task in flying:
                task.cancel()
