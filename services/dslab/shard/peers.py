"""This server's replicas of its shards: per shard, a ``ReplicaHost`` (the log) and the
``ShardChanges`` decided at it when it is primary, made on first use."""

from __future__ import annotations

from ..replication.transport import HttpTransport
from .changes import ShardChanges, apply_commands
from .journal import Journal
from .replicas import ReplicaHost
from .store import ShardStore

__all__ = ["Replicas"]


class Replicas:
    def __init__(self, name: str, store: ShardStore, *, heartbeat_interval: float,
                 request_timeout: float, commit_timeout: float) -> None:
        self.name = name
        self.store = store
        self.heartbeat_interval = heartbeat_interval
        self.request_timeout = request_timeout
        self.commit_timeout = commit_timeout
        self._hosts: dict[str, ReplicaHost] = {}
        self._changes: dict[str, ShardChanges] = {}
        self._transports: list[HttpTransport] = []

    def host(self, shard: str) -> ReplicaHost:
        host = self._hosts.get(shard)
        if host is None:
            transport = HttpTransport(shard, self.request_timeout)
            self._transports.append(transport)

            async def apply(commands: list[str], shard: str = shard) -> None:
                await apply_commands(self.store, shard, commands)

            host = self._hosts[shard] = ReplicaHost(
                self.name, shard, Journal(self.store.db, shard), apply, transport,
                heartbeat_interval=self.heartbeat_interval)
            self._changes[shard] = ShardChanges(self.store, shard, host, self.commit_timeout)
        return host

    def changes(self, shard: str) -> ShardChanges:
        self.host(shard)
        return self._changes[shard]

    async def close(self) -> None:
        for host in self._hosts.values():
            await host.close()
        for transport in self._transports:
            transport.close()
