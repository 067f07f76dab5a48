"""This server's replicas of its shards, one ``ReplicaHost`` each, made on first use."""

from __future__ import annotations

from typing import Any

from ..replication.transport import HttpTransport
from .changes import apply_change
from .journal import Journal
from .replicas import ReplicaHost
from .store import ShardStore

__all__ = ["Replicas"]


class Replicas:
    """This server's ``ReplicaHost`` per shard, made on first use."""

    def __init__(self, name: str, store: ShardStore, *, heartbeat_interval: float,
                 request_timeout: float) -> None:
        self.name = name
        self.store = store
        self.heartbeat_interval = heartbeat_interval
        self.request_timeout = request_timeout
        self._hosts: dict[str, ReplicaHost] = {}
        self._transports: list[HttpTransport] = []

    def host(self, shard: str) -> ReplicaHost:
        host = self._hosts.get(shard)
        if host is None:
            transport = HttpTransport(shard, self.request_timeout)
            self._transports.append(transport)

            async def apply(command: str, shard: str = shard) -> Any:
                return await apply_change(self.store, shard, command)

            host = self._hosts[shard] = ReplicaHost(
                self.name, shard, Journal(self.store.db, shard), apply, transport,
                heartbeat_interval=self.heartbeat_interval)
        return host

    @property
    def hosts(self) -> dict[str, ReplicaHost]:
        return dict(self._hosts)

    async def close(self) -> None:
        for host in self._hosts.values():
            await host.close()
        for transport in self._transports:
            transport.close()
