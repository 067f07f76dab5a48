"""The nemesis on a cluster of three Docker engines (``dslab.cluster``): faults of whole
nodes, which one engine cannot show.

    node_kill   a node dies whole, its engine and every container on it at once (a power cut
                of one machine); it stays down
    node_cut    a node loses the cluster's network and runs on alone; reconnected at the
                fault's end

Each is shown to have happened: the node's container found not running, or off the
cluster's network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import httpx
import psutil

from ..cluster import Cluster, cut_off, host_engine, kill_node, reconnect

__all__ = ["ClusterTarget"]


class ClusterTarget:
    """A Part 2 stack deployed on ``cluster``, its balancer at ``url``: the nemesis's node
    faults (a node is named ``node<i>``)."""

    def __init__(self, cluster: Cluster, url: str) -> None:
        self.cluster = cluster
        self.url = url

    def _index(self, node: str) -> int:
        i = int(node.removeprefix("node"))
        if not node.startswith("node") or i not in self.cluster.nodes:
            raise ValueError(f"no node {node!r} in {self.cluster.name}")
        return i

    def servers(self) -> dict[str, int]:
        return {}  # no loopback port: server faults are the process and Docker targets'

    def kill(self, names: Sequence[str]) -> list[psutil.Process]:
        raise NotImplementedError("on the cluster the nemesis faults whole nodes only")

    def pause(self, name: str) -> tuple[list[psutil.Process], Callable[[], None]]:
        raise NotImplementedError("on the cluster the nemesis faults whole nodes only")

    def power_off(self) -> list[psutil.Process]:
        raise NotImplementedError("on the cluster the nemesis faults whole nodes only")

    def power_on(self) -> None:
        raise NotImplementedError("on the cluster the nemesis faults whole nodes only")

    def shard_servers(self, shard: str) -> list[str]:
        servers = httpx.get(f"{self.url}/status", timeout=30).json()["servers"]
        return sorted(name for name, shards in servers.items() if shard in shards)

    def node_kill(self, node: str) -> dict[str, int]:
        i = self._index(node)
        kill_node(self.cluster, i)
        container = host_engine(self.cluster).containers.get(self.cluster.node(i))
        return {"nodes": 1, "killed": int(container.status != "running")}

    def node_cut(self, node: str) -> tuple[dict[str, int], Callable[[], None]]:
        i = self._index(node)
        cut_off(self.cluster, i)
        network = host_engine(self.cluster).networks.get(self.cluster.name)
        on = {c.name for c in network.containers}
        return ({"nodes": 1, "disconnected": int(self.cluster.node(i) not in on)},
                lambda: reconnect(self.cluster, i))
