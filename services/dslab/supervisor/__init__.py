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
    the Docker backend's (see ``supervisor/docker.py``)."""
    if backend == "process":
        return ProcessSupervisor(spec)
    if backend == "docker":
        try:
            from .docker import DockerSupervisor  # imports the Docker SDK only when asked for
        except ImportError as exc:
            raise SupervisorError("the Docker SDK is not installed: "
                                  "pip install 'dslab[docker]'") from exc

        return DockerSupervisor(spec, stack=stack, address=address)
    raise ValueError(f"unknown backend {backend!r}")


BACKENDS = ("process", "docker")

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
