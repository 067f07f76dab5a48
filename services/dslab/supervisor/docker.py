"""The Docker backend: each replica is a container the balancer spawns through the Docker SDK.

A replica is ``docker run <image>`` on the stack's network, with ``SERVER_ID`` in its
environment and labels that say which stack started it and which replica it is, so that
``remove_stack`` (and ``make down``) finds every container a balancer left. It listens on 5000.
Its container is named ``<stack>-<replica>``, so two stacks with the default replica names
(``Server1``, ...) run side by side on one engine; its hostname and its DNS name on the stack's
network (an alias) are the replica's name, the contract's hostnames.

How the balancer reaches it depends on where the balancer runs:

* ``address="name"``: the balancer is a container on the same network: ``<name>:5000``,
  resolved by Docker's DNS (the Compose deployment);
* ``address="loopback"``: the balancer runs on the host (tests, experiments): the container's
  port 5000 is published on an ephemeral port of 127.0.0.1.

A thread follows Docker's event stream for the stack's containers, so ``alive`` turns False the
moment a container dies, is stopped or removed, without an API call per heartbeat. If the
stream breaks (the engine restarted, a proxy closed it), the thread says so, follows it again
from where it stopped, and marks every container that is no longer running as dead.

docker-py's errors are translated here, at the edge: a missing container or volume is the
expected case it is; anything else becomes a ``SupervisorError`` (or is logged, where the
caller cannot act on it), never a bare ``except Exception``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Collection
from typing import Any

import docker.errors
import requests.exceptions

import docker

from .base import (
    Replica,
    ReplicaSpec,
    ReplicaSupervisor,
    SpawnError,
    SupervisorError,
    UnknownReplica,
)

__all__ = ["DockerSupervisor", "DockerUnavailable", "remove_stack"]

log = logging.getLogger(__name__)

LABEL_STACK = "dslab.stack"
LABEL_ROLE = "dslab.role"
LABEL_REPLICA = "dslab.replica"

# What docker-py raises when the engine refuses or cannot be reached.
DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)
_DEATH_EVENTS = ["die", "stop", "kill", "destroy", "oom"]


class DockerUnavailable(SupervisorError):
    """Docker was asked for and no engine answers, or an image is missing."""


def docker_client() -> Any:
    try:
        client = docker.from_env()
        client.ping()
    except DOCKER_ERRORS as exc:  # docker-py raises several unrelated types for "no engine"
        raise DockerUnavailable(f"Docker was asked for but no engine answers: {exc}") from exc
    return client


def remove_stack(stack: str) -> int:
    """Remove every container and network labelled with ``stack``; returns how many containers."""
    client = docker_client()
    containers = client.containers.list(all=True, filters={"label": f"{LABEL_STACK}={stack}"})
    for container in containers:
        container.remove(force=True, v=True)
    for network in client.networks.list(filters={"label": f"{LABEL_STACK}={stack}"}):
        network.remove()
    return len(containers)


class DockerSupervisor(ReplicaSupervisor):
    def __init__(self, spec: ReplicaSpec, *, stack: str = "dslab", network: str | None = None,
                 address: str = "name", start_timeout: float = 30.0,
                 stop_timeout: int = 5) -> None:
        super().__init__(spec)
        if spec.image is None:
            raise ValueError("the Docker backend needs an image in the replica spec")
        if address not in ("name", "loopback"):
            raise ValueError(f"address must be 'name' or 'loopback', got {address!r}")
        self.client = docker_client()
        try:
            self.client.images.get(spec.image)
        except docker.errors.ImageNotFound as exc:
            raise DockerUnavailable(f"image {spec.image} is missing: build it with `make images`") from exc
        except DOCKER_ERRORS as exc:
            raise DockerUnavailable(f"Docker could not look up image {spec.image}: {exc}") from exc
        self.stack = stack
        self.address = address
        # A container's start-up costs CPU-seconds of its own; capped at C cores it takes 1/C
        # times as long, so the deadline for an answer stretches with the quota.
        self.start_timeout = start_timeout / min(1.0, spec.cpus or 1.0)
        self.stop_timeout = stop_timeout
        self.network = network or f"{stack}-net"
        self._ensure_network()
        self._replicas: dict[str, Replica] = {}
        self._dead: set[str] = set()
        self._closing = False
        self._events = self._open_events(since=None)
        threading.Thread(target=self._follow_events, name="docker-events", daemon=True).start()

    def _open_events(self, since: float | None) -> Any:
        return self.client.events(decode=True, since=since, filters={
            "type": "container", "label": f"{LABEL_STACK}={self.stack}", "event": _DEATH_EVENTS})

    def _ensure_network(self) -> None:
        self._own_network = not self.client.networks.list(names=[self.network])
        if self._own_network:  # Compose made it otherwise, and removes it itself
            self.client.networks.create(self.network, driver="bridge",
                                        labels={LABEL_STACK: self.stack})

    def _follow_events(self) -> None:
        """Mark containers dead as Docker reports it; follow the stream again if it breaks."""
        last_seen = time.time()
        while not self._closing:
            try:
                for event in self._events:
                    last_seen = event.get("time", last_seen)
                    name = self._death_of(event.get("Actor", {}).get("Attributes", {}))
                    if name:
                        self._dead.add(name)
                if self._closing:
                    return
                why = "it ended"
            except Exception as exc:  # noqa: BLE001 - however it breaks, it is followed again
                if self._closing:  # close() closed it under the thread
                    return
                why = f"{type(exc).__name__}: {exc}"
            log.warning("Docker's event stream stopped (%s): following it again", why)
            try:
                self._events = self._open_events(since=last_seen)
                self._mark_stopped_containers()
            except DOCKER_ERRORS as exc:
                log.error("cannot follow Docker's events again (%s); retrying in 1 s", exc)
                time.sleep(1)  # the engine is away; liveness falls back on heartbeats

    def _death_of(self, attributes: dict[str, str]) -> str | None:
        """The replica whose death a container event reports (its labels), if any."""
        return attributes.get(LABEL_REPLICA)

    def _mark_stopped_containers(self) -> None:
        """After a gap in the events: every known replica whose container is not running."""
        running = {c.labels.get(LABEL_REPLICA) for c in self.client.containers.list(
            filters={"label": f"{LABEL_STACK}={self.stack}", "status": "running"})}
        self._dead |= set(self._replicas) - running

    async def spawn(self, name: str, *, avoid: Collection[str] = ()) -> Replica:
        if name in self._replicas:
            raise SpawnError(f"replica {name!r} already runs")
        loop = asyncio.get_running_loop()
        try:
            replica = await loop.run_in_executor(None, self._run, name)
        except DOCKER_ERRORS as exc:
            raise SpawnError(f"could not start container {name}: {exc}") from exc
        self._dead.discard(name)
        try:
            await self._wait_ready(replica)
        except BaseException:
            await loop.run_in_executor(None, self._remove_container, name)
            raise
        self._replicas[name] = replica
        log.info("replica %s started: container on %s", name, replica.address)
        return replica

    def container_name(self, name: str) -> str:
        """The container of replica ``name``: the stack's prefix keeps stacks apart."""
        return f"{self.stack}-{name}"

    def _remove_leftover(self, name: str) -> None:
        """A container of this stack under the replica's name that this supervisor did not
        start: left by a balancer that died without stopping it (a power loss, a SIGKILL).
        Its data is in its named volume, so it goes and the replica starts afresh."""
        try:
            old = self.client.containers.get(self.container_name(name))
        except docker.errors.NotFound:
            return
        if old.labels.get(LABEL_STACK) != self.stack:
            raise SpawnError(f"the name {self.container_name(name)} is taken by a container "
                             "that is not this stack's")
        log.warning("replica %s: removing its container left by an earlier run (%s)", name,
                    old.status)
        old.remove(force=True)

    def _run(self, name: str) -> Replica:
        self._remove_leftover(name)
        publish = {"5000/tcp": ("127.0.0.1", None)} if self.address == "loopback" else None
        volumes = None
        if self.spec.data_path:  # a named volume: the data outlives this container
            self._volume(name)
            volumes = {self._volume_name(name): {"bind": self.spec.data_path, "mode": "rw"}}
        container = self.client.containers.run(
            self.spec.image, name=self.container_name(name), hostname=name, detach=True,
            network=self.network, networking_config={
                self.network: self.client.api.create_endpoint_config(aliases=[name])},
            environment={**self.spec.env, "SERVER_ID": name, "PORT": "5000"},
            labels={LABEL_STACK: self.stack, LABEL_ROLE: "replica", LABEL_REPLICA: name},
            ports=publish,
            volumes=volumes,
            nano_cpus=round(self.spec.cpus * 1e9) if self.spec.cpus is not None else None)
        if self.address == "name":
            return Replica(name, name, 5000)
        container.reload()
        binding = container.attrs["NetworkSettings"]["Ports"]["5000/tcp"][0]
        return Replica(name, "127.0.0.1", int(binding["HostPort"]))

    async def _wait_ready(self, replica: Replica) -> None:
        """The container runs; wait until its server accepts connections (with a deadline)."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if replica.name in self._dead:
                raise SpawnError(f"container {replica.name} exited before listening")
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(replica.host, replica.port), 1)
                writer.close()
                # a published port accepts before the server inside listens: ask it
                reader, writer = await asyncio.open_connection(replica.host, replica.port)
                writer.write(b"GET /heartbeat HTTP/1.0\r\n\r\n")
                line = await asyncio.wait_for(reader.readline(), 1)
                writer.close()
                if line.startswith(b"HTTP/1.") and b" 200 " in line:
                    return
            except (TimeoutError, OSError):
                pass
            await asyncio.sleep(0.05)
        raise SpawnError(f"container {replica.name} did not answer within {self.start_timeout:g}s")

    async def remove(self, name: str) -> None:
        if self._replicas.pop(name, None) is None:
            raise UnknownReplica(f"no replica {name!r}")
        await asyncio.get_running_loop().run_in_executor(None, self._remove_container, name)
        log.info("replica %s removed", name)

    def _remove_container(self, name: str) -> None:
        try:
            container = self.client.containers.get(self.container_name(name))
            container.stop(timeout=self.stop_timeout)
            container.remove(force=True)  # its named volume, if any, stays
        except docker.errors.NotFound:
            return  # already gone (removed outside the balancer, or by its own exit)
        except DOCKER_ERRORS as exc:
            raise SupervisorError(f"could not remove container {name}: {exc}") from exc

    def _volume_name(self, name: str) -> str:
        return f"{self.stack}-{name}-data"

    def _volume(self, name: str) -> None:
        try:
            self.client.volumes.get(self._volume_name(name))
        except docker.errors.NotFound:
            self.client.volumes.create(self._volume_name(name), labels={LABEL_STACK: self.stack})

    async def discard_data(self, name: str) -> None:
        def remove() -> None:
            volume = self._volume_name(name)
            try:
                self.client.volumes.get(volume).remove(force=True)
            except docker.errors.NotFound:
                pass  # never made, or already gone
            except DOCKER_ERRORS as exc:  # the caller goes on: say it, the data is still there
                log.error("volume %s could not be removed, remove it by hand: %s", volume, exc)

        if self.spec.data_path:
            await asyncio.get_running_loop().run_in_executor(None, remove)

    def replicas(self) -> list[Replica]:
        return list(self._replicas.values())

    def alive(self, name: str) -> bool:
        return name in self._replicas and name not in self._dead

    async def close(self) -> None:
        await super().close()
        self._closing = True
        self._events.close()
        if self._own_network:
            await asyncio.get_running_loop().run_in_executor(None, self._remove_network)

    def _remove_network(self) -> None:
        for network in self.client.networks.list(names=[self.network]):
            network.remove()
