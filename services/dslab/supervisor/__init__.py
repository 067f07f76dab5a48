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

__all__ = [
    "Replica",
    "ReplicaSpec",
    "ReplicaSupervisor",
    "SpawnError",
    "SupervisorError",
    "UnknownReplica",
    "ProcessSupervisor",
    "is_dns_label",
    "random_hostname",
    "same_name",
]
