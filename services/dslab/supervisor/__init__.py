"""Replica supervisors: one interface, a backend per way of running replicas."""

from .base import (
    Replica,
    ReplicaSpec,
    ReplicaSupervisor,
    SpawnError,
    SupervisorError,
    UnknownReplica,
)
from .names import is_dns_label, random_hostname, same_name
from .process import ProcessSupervisor


def make_supervisor(backend: str, spec: ReplicaSpec) -> ReplicaSupervisor:
    """The one place a backend is chosen, for both balancers."""
    if backend == "process":
        return ProcessSupervisor(spec)
    raise ValueError(f"unknown backend {backend!r}")


BACKENDS = ("process",)

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
    "same_name",
]
