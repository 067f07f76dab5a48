"""The client of the shard servers: one JSON request to a named server, or to any live
replica of a shard (failing over along the shard's ring).

    call      the server's JSON answer; ``ServerRefused`` for any other status; an
              ``UpstreamError`` when it could not be reached
    ask_one   one live replica of a shard, chosen at random; 503 when none answers

The connections are the keeper's (one pool per started server).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from ..common.errors import Unavailable
from ..keeper.routing import NoReplicaAvailable, route
from ..keeper.upstream import UpstreamError, UpstreamPool, format_json_request
from ..ring import HashRing
from .fanout import ServerRefused

__all__ = ["Call", "ServerTrouble", "ShardServers"]


class ServerTrouble(UpstreamError):
    """A shard server answered 5xx to a read: for the router, try the next replica."""


# (server, method, path, JSON body) -> the server's JSON answer
Call = Callable[[str, str, str, dict[str, Any]], Awaitable[dict[str, Any]]]


class ShardServers:
    """``call`` goes over the keeper's connection pools, unless a test gives its own (a
    stand-in that answers from memory, to step failure orders)."""

    def __init__(self, pool_of: Callable[[str], UpstreamPool | None],
                 on_failure: Callable[[], None], rng: random.Random,
                 call: Call | None = None) -> None:
        self.pool_of = pool_of
        self.on_failure = on_failure  # a replica failed a read: check heartbeats now
        self.rng = rng
        self.call: Call = call or self.call_over_pool

    async def call_over_pool(self, name: str, method: str, path: str,
                             payload: dict[str, Any]) -> dict[str, Any]:
        """The real call: over the server's pooled connections."""
        pool = self.pool_of(name)
        if pool is None:
            raise ServerTrouble(f"{name} is not a live server")
        response = await pool.fetch(format_json_request(method, path, name,
                                                        orjson.dumps(payload)))
        try:
            body = orjson.loads(response.body) if response.body else {}
        except ValueError:
            body = {"message": response.body[:200].decode("latin-1")}
        if response.status != 200:
            raise ServerRefused(name, response.status, str(body.get("message", "")))
        return dict(body)

    async def ask_one(self, shard: str, ring: HashRing, method: str, path: str,
                      payload: dict[str, Any]) -> dict[str, Any]:
        """Ask one live replica of ``shard``: a 5xx or no answer tries the next one on the
        ring; a 4xx is the request's fault and is the answer."""
        async def ask(name: str) -> dict[str, Any]:
            try:
                return await self.call(name, method, path, payload)
            except ServerRefused as exc:
                if exc.status >= 500:
                    raise ServerTrouble(f"{name} answered {exc.status}: {exc.message}") from exc
                raise
        try:
            _, answer = await route(self.rng.randint(0, 999999), ring, ask,
                                    lambda name, exc: self.on_failure())
        except NoReplicaAvailable as exc:
            raise Unavailable(f"<Error> Shard {shard} has no live replica: {exc}") from None
        return answer
