"""The Swarm backend: each replica is a Docker Swarm service of one task, spread over the nodes.

A replica is ``docker service create <image>`` named ``<stack>-<replica>``, on the stack's
attachable overlay network with the replica's name as its alias (so the contract's hostnames
resolve on every node), ``SERVER_ID`` in its environment, and the stack's labels on the service
and on its task's container. Its endpoint is DNS round-robin (``dnsrr``): on this machine the
default virtual IP did not route on an attachable overlay, and a one-task service gains nothing
from a VIP. A CPU capacity per replica is the service's CPU limit.

Swarm's own restart policy is off (``condition: none``): the contract has the balancer replace
a dead replica under a new random name, and a Swarm restart would bring it back under the old
name behind the balancer's back. Death is read two ways: the local engine's container events
(the task's container carries the stack's labels; fast, this node only, as in the Docker
backend) and the tasks' states, asked of the manager every ``poll_interval`` (every node).

Part 2: a shard server's data lives in a named volume on the node its task ran on. The node is
remembered in a Swarm config (``<stack>-<replica>-node``, swarm-wide), so that a server
started again under the same name (a balancer restarted) is constrained to that node and finds
its data; a replacement under a new name may land anywhere and is refilled by /copy.

How the balancer reaches a replica:

* ``address="name"``: the balancer is a container or a service on the overlay: ``<name>:5000``;
* ``address="loopback"``: the balancer runs on a node's host (tests on a single-node swarm):
  the task publishes port 5000 in host mode on an ephemeral port of its node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Collection
from typing import Any

import docker.errors
import docker.types

from .base import Replica, ReplicaSpec, SpawnError, SupervisorError
from .docker import (
    DOCKER_ERRORS,
    LABEL_REPLICA,
    LABEL_ROLE,
    LABEL_STACK,
    DockerSupervisor,
    DockerUnavailable,
    docker_client,
)

__all__ = ["SwarmSupervisor", "any_running", "remove_swarm_stack", "swarm_state"]

log = logging.getLogger(__name__)

# A task in one of these states will not serve again (restart policy off).
ENDED = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}


def newest_tasks(tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Service id -> its newest task (a service of one task that ended keeps the old one)."""
    newest: dict[str, dict[str, Any]] = {}
    for task in tasks:
        service = task["ServiceID"]
        if service not in newest or task["CreatedAt"] > newest[service]["CreatedAt"]:
            newest[service] = task
    return newest


def any_running(tasks: list[dict[str, Any]]) -> bool:
    """Whether any of these tasks has not ended yet (as the manager last heard)."""
    return any(task["Status"]["State"] not in ENDED for task in tasks)


def swarm_state(client: Any) -> str:
    """This engine's swarm state: "inactive", "pending", "active" or "locked"."""
    return str(client.info().get("Swarm", {}).get("LocalNodeState", "inactive"))


def remove_swarm_stack(stack: str) -> dict[str, int]:
    """Remove every service, config, network and (this node's) volume labelled with
    ``stack`` (the balancer's services and the ones a stack file deployed with the label);
    returns how many of each."""
    client = docker_client()
    label = {"label": f"{LABEL_STACK}={stack}"}
    removed = {"services": 0, "configs": 0, "networks": 0, "volumes": 0}
    _stop_balancers(client, label)
    deadline = time.monotonic() + 60
    # Again until none is left: a balancer being removed may start a replacement meanwhile.
    while services := client.services.list(filters=label):
        if time.monotonic() > deadline:
            raise SupervisorError(f"the services of stack {stack} kept coming back: {services}")
        for service in services:
            try:
                service.remove()
            except docker.errors.NotFound:
                continue
            removed["services"] += 1
    for config in client.configs.list(filters=label):
        config.remove()
        removed["configs"] += 1
    if not containers_gone(client, [f"{LABEL_STACK}={stack}"], 30):
        raise SupervisorError(f"the containers of stack {stack} did not go within 30s")
    for kind, collection in (("networks", client.networks), ("volumes", client.volumes)):
        for item in collection.list(filters=label):
            try:
                item.remove()
            except docker.errors.NotFound:
                continue  # `docker stack rm` removed it meanwhile
            removed[kind] += 1
    return removed


def _stop_balancers(client: Any, label: dict[str, str], grace: float = 10.0) -> None:
    """Scale the stack file's services (the balancer, its metadata engine) to no task and wait
    until their tasks ended, within Swarm's stop grace period (10 s) and a margin. A balancer
    removed while its servers go would see them die and start them again in place, on any
    node, after it was asked to stop (seen on the three-engine cluster); stopped first, it
    removes its own replicas and starts none."""
    stopping = [s for s in client.services.list(filters=label)
                if s.attrs["Spec"].get("Labels", {}).get(LABEL_ROLE) != "replica"
                and "Replicated" in s.attrs["Spec"].get("Mode", {})]
    for service in stopping:
        with contextlib.suppress(docker.errors.NotFound):
            service.scale(0)
    ids = [service.id for service in stopping]
    deadline = time.monotonic() + grace + 20
    while ids and any_running(client.api.tasks(filters={"service": ids})):
        if time.monotonic() > deadline:
            raise SupervisorError(f"the balancer of {label['label']} did not stop within "
                                  f"{grace + 20:g}s")
        time.sleep(0.2)


def containers_gone(client: Any, labels: list[str], timeout: float) -> bool:
    """Wait until no container (on this node) carries every one of ``labels``; False if some
    still did after ``timeout`` s. Swarm reaps a removed service's container a second or two
    later, and a network or a volume in use by one cannot be removed until then."""
    deadline = time.monotonic() + timeout
    # The low-level list: the high-level one inspects each container, and one that goes in
    # between raises NotFound.
    while client.api.containers(all=True, filters={"label": labels}):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


class SwarmSupervisor(DockerSupervisor):
    def __init__(self, spec: ReplicaSpec, *, stack: str = "dslab", network: str | None = None,
                 address: str = "name", start_timeout: float = 60.0, stop_timeout: int = 5,
                 poll_interval: float = 0.5) -> None:
        client = docker_client()
        if swarm_state(client) != "active" or not client.info()["Swarm"].get("ControlAvailable"):
            raise DockerUnavailable("the Swarm backend needs this engine to be a swarm manager: "
                                    "`docker swarm init` (or `make swarm-up`) first")
        self.poll_interval = poll_interval
        self._task_ids: dict[str, str] = {}  # replica -> the task that runs it now
        super().__init__(spec, stack=stack, network=network, address=address,
                         start_timeout=start_timeout, stop_timeout=stop_timeout)
        threading.Thread(target=self._poll_tasks, name="swarm-tasks", daemon=True).start()

    # --- the network: an attachable overlay, over every node ---------------------------------

    def _ensure_network(self) -> None:
        self._own_network = not self.client.networks.list(names=[self.network])
        if self._own_network:
            self.client.networks.create(self.network, driver="overlay", attachable=True,
                                        labels={LABEL_STACK: self.stack})

    def _replica_containers_gone(self, timeout: float = 30) -> None:
        """Every replica container of the stack gone from this node (not the balancer's own,
        if it is one), or a warning."""
        if not containers_gone(self.client, [f"{LABEL_STACK}={self.stack}",
                                             f"{LABEL_ROLE}=replica"], timeout):
            log.warning("replica containers of %s are still there %gs after their services "
                        "went", self.stack, timeout)

    def _remove_network(self) -> None:
        """The overlay can go once no task uses it: after the containers are reaped, and the
        manager may still hold on a moment longer (try again, within a deadline)."""
        self._replica_containers_gone()
        deadline = time.monotonic() + 30
        while self.client.networks.list(names=[self.network]):
            try:
                super()._remove_network()
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if time.monotonic() > deadline:
                    raise SupervisorError(f"network {self.network} stays in use: {exc}") from exc
            time.sleep(0.2)

    async def close(self) -> None:
        """Every service removed and, when this returns, no replica container left on this
        node (nor the network, if this supervisor made it)."""
        await super().close()
        await asyncio.get_running_loop().run_in_executor(None, self._replica_containers_gone)

    # --- a replica: a service of one task ----------------------------------------------------

    def container_name(self, name: str) -> str:
        """The service of replica ``name`` (its task's container is named after it by Swarm)."""
        return f"{self.stack}-{name}"

    def _config_name(self, name: str) -> str:
        return f"{self.stack}-{name}-node"

    def _node_config(self, name: str) -> Any:
        """The config that remembers replica ``name``'s node, or None (the name filter
        matches prefixes: Server1 would find Server12's)."""
        wanted = self._config_name(name)
        return next((c for c in self.client.configs.list(filters={"name": wanted})
                     if c.name == wanted), None)

    def _remembered_node(self, name: str) -> str | None:
        config = self._node_config(name)
        return None if config is None else str(config.attrs["Spec"]["Labels"]["dslab.node"])

    def _remember_node(self, name: str, node: str) -> None:
        if self._remembered_node(name) is None:
            self.client.configs.create(name=self._config_name(name), data=node.encode(),
                                       labels={LABEL_STACK: self.stack, "dslab.node": node})

    def _remove_leftover(self, name: str) -> None:
        """A service of this stack under the replica's name that this supervisor did not
        start: left by a balancer that died with its node (the manager lost), whose task may
        still run on another node. It goes, and its task must have stopped (on whatever node,
        as the manager sees it) before the replica starts again on the same volume."""
        try:
            old = self.client.api.inspect_service(self.container_name(name))
        except docker.errors.NotFound:
            return
        if old["Spec"].get("Labels", {}).get(LABEL_STACK) != self.stack:
            raise SpawnError(f"the name {self.container_name(name)} is taken by a service "
                             "that is not this stack's")
        log.warning("replica %s: removing its service left by an earlier balancer", name)
        # Its tasks are asked for before it goes: a filter on a removed service is refused.
        tasks = [task["ID"] for task in self.client.api.tasks(filters={"service": old["ID"]})]
        self.client.api.remove_service(old["ID"])
        deadline = time.monotonic() + self.stop_timeout + 10
        while any(self._task_running(task) for task in tasks):
            if time.monotonic() > deadline:
                log.warning("replica %s: its old task did not report stopping", name)
                return
            time.sleep(0.1)

    def _task_running(self, task_id: str) -> bool:
        """False once the task ended or the manager forgot it."""
        try:
            return self.client.api.inspect_task(task_id)["Status"]["State"] not in ENDED
        except docker.errors.NotFound:
            return False

    def _create_service(self, name: str, avoid: Collection[str] = ()) -> None:
        self._remove_leftover(name)
        labels = {LABEL_STACK: self.stack, LABEL_ROLE: "replica", LABEL_REPLICA: name}
        mounts, constraints = [], []
        if self.spec.data_path:  # a named volume on the task's node: the data outlives it
            mounts.append(docker.types.Mount(self.spec.data_path, self._volume_name(name),
                                             type="volume", labels={LABEL_STACK: self.stack}))
            node = self._remembered_node(name)
            if node is not None:  # started again: only where its data is
                constraints.append(f"node.id=={node}")
        if not constraints:
            constraints += [f"node.hostname!={host}" for host in self._avoidable(avoid)]
        # Host mode, no published port: an ephemeral one on the task's node (the stubs want
        # strings; the API wants the port as a number).
        ports: Any = ([{"Protocol": "tcp", "TargetPort": 5000, "PublishMode": "host"}]
                      if self.address == "loopback" else None)
        resources = (docker.types.Resources(cpu_limit=round(self.spec.cpus * 1e9))
                     if self.spec.cpus is not None else None)
        self.client.services.create(
            self.spec.image, name=self.container_name(name), hostname=name,
            env=[f"{k}={v}" for k, v in {**self.spec.env, "SERVER_ID": name,
                                          "PORT": "5000"}.items()],
            labels=labels, container_labels=labels,
            networks=[docker.types.NetworkAttachmentConfig(self.network, aliases=[name])],
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr", ports=ports),
            restart_policy=docker.types.RestartPolicy(condition="none"),
            resources=resources, mounts=mounts or None, constraints=constraints or None,
            stop_grace_period=self.stop_timeout * 10**9)

    def _task(self, name: str) -> dict[str, Any] | None:
        """The newest task of replica ``name``'s service, as the manager knows it."""
        tasks = newest_tasks(self.client.api.tasks(filters={"service": self.container_name(name)}))
        return next(iter(tasks.values()), None)

    async def spawn(self, name: str, *, avoid: Collection[str] = ()) -> Replica:
        if name in self._replicas:
            raise SpawnError(f"replica {name!r} already runs")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._create_service, name, avoid)
        except DOCKER_ERRORS as exc:
            raise SpawnError(f"could not create service {self.container_name(name)}: {exc}") from exc
        self._dead.discard(name)
        try:
            replica = await self._wait_running(name)
            await self._wait_ready(replica)
        except BaseException:
            await loop.run_in_executor(None, self._remove_container, name)
            raise
        self._replicas[name] = replica
        log.info("replica %s started: Swarm service on %s (node %s)", name, replica.address,
                 replica.node)
        return replica

    async def _wait_running(self, name: str) -> Replica:
        """The service exists; wait for its task to run (the image may have to be pulled, the
        task placed), then say where it listens."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            task = await loop.run_in_executor(None, self._task, name)
            state = task["Status"]["State"] if task else "new"
            if state == "running":
                assert task is not None
                self._task_ids[name] = task["ID"]
                if self.spec.data_path:
                    await loop.run_in_executor(None, self._remember_node, name, task["NodeID"])
                node = await loop.run_in_executor(None, self._hostname, task["NodeID"])
                if self.address == "name":
                    return Replica(name, name, 5000, node=node)
                ports = task["Status"].get("PortStatus", {}).get("Ports", [])
                if ports:
                    return Replica(name, "127.0.0.1", int(ports[0]["PublishedPort"]), node=node)
            elif state in ENDED:
                why = task["Status"].get("Err") or task["Status"].get("Message") if task else ""
                raise SpawnError(f"service {self.container_name(name)}'s task {state}: {why}")
            await asyncio.sleep(0.1)
        raise SpawnError(f"service {self.container_name(name)} did not run within "
                         f"{self.start_timeout:g}s")

    def _avoidable(self, avoid: Collection[str]) -> list[str]:
        """Of the nodes ``avoid`` names, those the task can keep off: all of them when a node
        the manager calls ready is left, else none (a replica on a doubtful node beats none).
        The manager calls a node that died ready for seconds: a task it places there waits
        out the start timeout."""
        if not avoid:
            return []
        ready = {node.attrs["Description"]["Hostname"] for node in self.client.nodes.list()
                 if node.attrs["Status"]["State"] == "ready"
                 and node.attrs["Spec"]["Availability"] == "active"}
        return sorted(set(avoid)) if ready - set(avoid) else []

    def _hostname(self, node_id: str) -> str:
        """The hostname of a swarm node (what /metrics shows a replica runs on)."""
        return str(self.client.api.inspect_node(node_id)["Description"]["Hostname"])

    def _remove_container(self, name: str) -> None:
        try:
            self.client.api.remove_service(self.container_name(name))
        except docker.errors.NotFound:
            return  # already gone
        except DOCKER_ERRORS as exc:
            raise SupervisorError(f"could not remove service {name}: {exc}") from exc
        if self.spec.data_path:
            # Its engine's files must be let go before another engine may open them (the
            # same server started again in place) or its volume be removed. A replica with no
            # data need not wait: Swarm reaps its task's container in a second or two, and
            # the replacement starts meanwhile.
            self._wait_task_gone(name)

    def _wait_task_gone(self, name: str) -> None:
        """Swarm stops the task's container after the service is removed; wait for it on
        this node (its volume cannot go while it exists), within the stop timeout."""
        labels = [f"{LABEL_STACK}={self.stack}", f"{LABEL_REPLICA}={name}"]
        if not containers_gone(self.client, labels, self.stop_timeout + 10):
            log.warning("the container of %s is still there after its service went", name)

    async def discard_data(self, name: str) -> None:
        def forget() -> None:
            config = self._node_config(name)
            if config is not None:
                config.remove()

        if self.spec.data_path:
            await super().discard_data(name)  # the volume, where it is on this node
            await asyncio.get_running_loop().run_in_executor(None, forget)

    def _death_of(self, attributes: dict[str, str]) -> str | None:
        """Only the death of the task that runs a replica now: the container of an earlier
        task under the same name (removed as a leftover, or stopping after its service went)
        may report its end after the replica was started again."""
        name = attributes.get(LABEL_REPLICA)
        if name is None or attributes.get("com.docker.swarm.task.id") != self._task_ids.get(name):
            return None
        return name

    # --- death: the tasks' states, from the manager --------------------------------------------

    def _poll_tasks(self) -> None:
        while not self._closing:
            try:
                self._mark_ended_tasks()
            except DOCKER_ERRORS as exc:
                log.warning("cannot read the stack's tasks (%s); liveness falls back on "
                            "heartbeats until it can", exc)
            time.sleep(self.poll_interval)

    def _mark_ended_tasks(self) -> None:
        """Mark dead every known replica whose service is gone or whose newest task ended."""
        names = list(self._replicas)
        if not names:
            return
        services = {s["Spec"]["Name"]: s["ID"] for s in self.client.api.services(
            filters={"label": f"{LABEL_STACK}={self.stack}"})}
        newest = newest_tasks(self.client.api.tasks(filters={"service": list(services.values())}))
        for name in names:
            service = services.get(self.container_name(name))
            task = newest.get(service) if service else None
            if task is None or task["Status"]["State"] in ENDED:
                self._dead.add(name)

    def _mark_stopped_containers(self) -> None:
        """After a gap in the local events: the tasks' states say who ended, on every node."""
        self._mark_ended_tasks()
