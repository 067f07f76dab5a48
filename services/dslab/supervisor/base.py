"""One interface for "start, stop, list replicas"; backends differ only in how a replica runs.

The balancer holds a ``ReplicaSupervisor`` and never knows which backend it is: local
processes on loopback ports (``ProcessSupervisor``, the embedded default) or Docker containers
(added later). Liveness over HTTP (heartbeats) is the balancer's job; ``alive`` is the
backend's cheap local view (has the process exited, is the container gone).

    SupervisorError
    ├── SpawnError     a replica could not be started or never became ready
    └── UnknownReplica no replica of that name
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

__all__ = [
    "Replica",
    "ReplicaSpec",
    "ReplicaSupervisor",
    "SpawnError",
    "SupervisorError",
    "UnknownReplica",
]


class SupervisorError(Exception):
    pass


class SpawnError(SupervisorError):
    pass


class UnknownReplica(SupervisorError):
    pass


@dataclass(frozen=True)
class ReplicaSpec:
    """What a replica runs: a Python module (process backend) or an image (Docker backend)."""

    module: str
    env: Mapping[str, str] = field(default_factory=dict)
    image: str | None = None
    data_path: str | None = None  # Docker: a path whose data outlives the container
    cpus: float | None = None  # a CPU capacity per replica, in cores (None: no limit)


@dataclass(frozen=True)
class Replica:
    name: str
    host: str
    port: int
    node: str | None = None  # the host it runs on, where the backend spans several (Swarm)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class ReplicaSupervisor(abc.ABC):
    def __init__(self, spec: ReplicaSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    async def spawn(self, name: str, *, avoid: Collection[str] = ()) -> Replica:
        """Start a replica called ``name``; returns once it listens. ``avoid``: nodes not to
        place it on while another can take it, where the backend spans several (a
        replacement keeps off the node its predecessor died on, which may be dead itself)."""

    @abc.abstractmethod
    async def remove(self, name: str) -> None:
        """Stop a replica and release what it held. Removing a dead replica is fine."""

    @abc.abstractmethod
    def replicas(self) -> list[Replica]:
        """The replicas this supervisor started and has not removed, in start order."""

    @abc.abstractmethod
    def alive(self, name: str) -> bool:
        """The backend's local view: False once the replica's process or container is gone."""

    async def discard_data(self, name: str) -> None:
        """Forget the data a removed replica kept outside itself (a volume); nothing by default.
        ``remove`` alone keeps it, so a restarted balancer can start the replica on it again."""
        return None  # the process backend keeps no data of its own (the caller owns folders)

    async def close(self) -> None:
        """Remove every replica (all at once: each may take seconds to shut down cleanly)."""
        await asyncio.gather(*(self.remove(replica.name) for replica in self.replicas()))

    async def __aenter__(self) -> ReplicaSupervisor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
