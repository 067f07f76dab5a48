"""The Part 1 load balancer: consistent-hash proxy over a supervised replica set."""

from .membership import ReplicaSet
from .proxy import Proxy

__all__ = ["Proxy", "ReplicaSet"]
