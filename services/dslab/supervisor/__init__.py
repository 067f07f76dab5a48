"""Replica supervisors: one interface, a backend per way of running replicas."""

from .base import (
    Replica,
    ReplicaSpec,
    ReplicaSupervisor,
    SpawnError,
    SupervisorError,
    UnknownReplica,
)
from .names import is_dns_label, random_hostname
from .process import ProcessSupervisor


def make_supervisor(backend: str, spec: ReplicaSpec, *, stack: str = "dslab",
                    address: str = "name") -> ReplicaSupervisor:
    """The one place a backend is chosen, for both balancers. ``stack`` and ``address`` are
    the Docker and Swarm backends' (see ``supervisor/docker.py`` and ``supervisor/swarm.py``)."""
    if backend == "process":
        return ProcessSupervisor(spec)
    if backend in ("docker", "swarm"):
        try:  # imports the Docker SDK only when asked for
            from .docker import DockerSupervisor
            from .swarm import SwarmSupervisor
        except ImportError as exc:
            raise SupervisorError("the Docker SDK is not installed: "
                                  "pip install 'dslab[docker]'") from exc

        kind = DockerSupervisor if backend == "docker" else SwarmSupervisor
        return kind(spec, stack=stack, address=address)
    raise ValueError(f"unknown backend {backend!r}")


BACKENDS = ("process", "docker", "swarm")

__all__ = [
    "BACKENDS",
    "ProcessSupervisor",
    "Replica",
    "ReplicaSpec",
    "ReplicaSupervisor",
    "SpawnError",
    "SupervisorError",
    "UnknownReplica",
    "is_dns_label",
    "make_supervisor",
    "random_hostname",
]
