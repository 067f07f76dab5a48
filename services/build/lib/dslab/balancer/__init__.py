"""The Part 1 load balancer: consistent-hash proxy over a supervised replica set."""

from .front import Front, start_front
from .membership import ReplicaSet
from .proxy import Proxy

__all__ = ["Front", "Proxy", "ReplicaSet", "start_front"]
