"""How messages travel between the shard servers, and from the balancer to them: I/O, kept
apart from the pure core of this package.

``HttpTransport`` sends a message as ``POST /repl/step`` on a kept-alive connection per address
(the proxy's lean client, ``keeper/upstream.py``) and reads the replies from the answer. A
lost exchange raises: the primary's heartbeats, or the manager's next election, resend what
it carried.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from ..keeper.upstream import UpstreamPool, format_json_request
from .messages import Message
from .wire import decode, encode

__all__ = ["HttpTransport", "TransportError"]


class TransportError(Exception):
    """A peer answered, but not with replies."""


class HttpTransport:
    def __init__(self, shard: str, timeout: float) -> None:
        self.shard = shard
        self.timeout = timeout
        self._pools: dict[str, UpstreamPool] = {}

    async def __call__(self, address: str, message: Message,
                       peers: Mapping[str, str] | None = None) -> list[Message]:
        pool = self._pools.get(address)
        if pool is None:
            host, _, port = address.rpartition(":")
            pool = self._pools[address] = UpstreamPool(host, int(port), timeout=self.timeout)
        body = orjson.dumps({"shard": self.shard, "message": encode(message),
                             **({"peers": dict(peers)} if peers else {})})
        response = await pool.fetch(format_json_request("POST", "/repl/step", address, body))
        if response.status != 200:
            raise TransportError(f"{address} answered {response.status}: {response.body[:200]!r}")
        return [decode(reply) for reply in orjson.loads(response.body)["replies"]]

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
