"""The cluster's pure parts, in `make test` (the cluster itself: test_cluster.py)."""

from __future__ import annotations

import ipaddress

from prometheus_client import CollectorRegistry, generate_latest

from dslab.cluster import Cluster, host_environment, replica_nodes
from dslab.keeper.metrics import KeeperCollector


def test_nodes_have_distinct_fixed_addresses_in_the_subnet_and_their_own_sockets():
    cluster = Cluster(name="c", size=5, subnet="10.77.0.0/24")
    addresses = [cluster.address(i) for i in cluster.nodes]
    assert len(set(addresses)) == 5
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.77.0.0/24") for a in addresses)
    assert len({cluster.docker_host(i) for i in cluster.nodes}) == 5
    assert len({cluster.node(i) for i in cluster.nodes} | {cluster.volume(i) for i in cluster.nodes}) == 10


def test_the_host_engine_is_not_the_cluster_s_own(monkeypatch):
    """After `eval $(make -s cluster-env)`, DOCKER_HOST points at the manager inside the
    cluster; the nodes themselves are on the engine outside it."""
    cluster = Cluster(name="c")
    monkeypatch.setenv("DOCKER_HOST", cluster.docker_host(0))
    assert "DOCKER_HOST" not in host_environment(cluster)
    monkeypatch.setenv("DOCKER_HOST", "tcp://elsewhere:2376")
    assert host_environment(cluster)["DOCKER_HOST"] == "tcp://elsewhere:2376"
    monkeypatch.setenv("DOCKER_HOST", Cluster(name="other").docker_host(0))
    assert "DOCKER_HOST" in host_environment(cluster)


class Counts:
    """A keeper's counts as the collector reads them (the protocol's plain data)."""

    replacements = 0
    evictions = 0

    def __init__(self, nodes: dict[str, str]) -> None:
        self.nodes = nodes

    def serving(self) -> list[str]:
        return list(self.nodes)

    def evicted(self) -> list[str]:
        return []

    def placement(self) -> dict[str, str]:
        return dict(self.nodes)


def test_where_replicas_run_goes_through_metrics_and_back():
    placement = {"Server1": "node1", "Server2": "node2", "Server3": "node1"}
    registry = CollectorRegistry()
    registry.register(KeeperCollector(Counts(placement)))
    assert replica_nodes(generate_latest(registry).decode()) == placement
    empty = CollectorRegistry()
    empty.register(KeeperCollector(Counts({})))
    assert replica_nodes(generate_latest(empty).decode()) == {}
