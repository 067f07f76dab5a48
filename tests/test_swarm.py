"""The Swarm backend: replicas and shard servers as Swarm services, on a single-node swarm.

These run wherever a Docker engine answers (CI here has one). The module initialises a swarm
(``docker swarm init --advertise-addr 127.0.0.1``) if the engine is in none, and afterwards
leaves it and removes the ``docker_gwbridge`` network that leaving leaves behind, so the engine
ends as it started; on an engine that already is a swarm manager it uses that swarm and leaves
it be. Only one node here: spreading over several nodes is not tested (see the README).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid

import httpx
import pytest

from conftest import (
    REPO,
    SPAWN_BUDGET,
    HomeLoad,
    detection_time,
    row,
    seed_init,
    written_then_stopped,
)
from dslab.stack import BalancerProcess, wait_until
from dslab.supervisor import ProcessSupervisor, ReplicaSpec, SpawnError
from dslab.supervisor.docker import DockerSupervisor, DockerUnavailable
from dslab.supervisor.swarm import SwarmSupervisor, remove_swarm_stack, swarm_state
from dslab.swarmctl import swarm_for_a_while


def swarm_networks(docker) -> set[str]:
    """The networks a swarm brings (other tests may make their own meanwhile)."""
    return {n.name for n in docker.networks.list() if n.name in ("docker_gwbridge", "ingress")}


@pytest.fixture(scope="module")
def swarm(docker):
    """A swarm this engine manages: this machine's, or one initialised for these tests and
    undone afterwards (with the docker_gwbridge network that `swarm leave` leaves behind)."""
    networks_before = swarm_networks(docker)
    before = swarm_state(docker)
    if before not in ("inactive", "active"):
        pytest.skip(f"this engine's swarm is {before}")
    with swarm_for_a_while(docker):
        yield docker
    assert swarm_state(docker) == before
    assert swarm_networks(docker) == networks_before


@pytest.fixture
def stack(docker):
    """A fresh label for this test's services; afterwards none of them, and none of their
    containers or networks, may be left (volumes and configs a stopped Part 2 balancer kept
    on purpose, its data and where it lives, are removed quietly)."""
    label = f"test-{uuid.uuid4().hex[:8]}"
    yield label
    filters = {"label": f"dslab.stack={label}"}
    services = docker.services.list(filters=filters) if swarm_state(docker) == "active" else []
    containers = docker.api.containers(all=True, filters=filters)
    networks = docker.networks.list(filters=filters)
    if swarm_state(docker) == "active":
        remove_swarm_stack(label)
    for container in docker.api.containers(all=True, filters=filters):
        docker.api.remove_container(container["Id"], force=True)
    for network in docker.networks.list(filters=filters):
        network.remove()
    for volume in docker.volumes.list(filters=filters):
        volume.remove(force=True)
    assert not services and not containers and not networks, \
        f"left behind: {services} {containers} {networks}"


def test_without_a_swarm_the_backend_says_how_to_get_one(docker):
    """Runs before the module's swarm exists (first in the file, and it does not ask for it)."""
    if swarm_state(docker) != "inactive":
        pytest.skip("this engine is in a swarm already")
    spec = ReplicaSpec(module="dslab.replica", image="dslab-replica:latest")
    with pytest.raises(DockerUnavailable, match="docker swarm init"):
        SwarmSupervisor(spec, stack="nope")


def test_make_swarm_up_serves_replaces_and_swarm_down_leaves_nothing(docker, stack):
    """`make swarm-up` on an engine in no swarm makes one, deploys the balancer as a service
    and serves; `make swarm-down` removes everything and leaves the swarm it made (with the
    docker_gwbridge network). Runs before the module's swarm exists (it does not ask for it)."""
    from conftest import free_port

    if swarm_state(docker) != "inactive":
        pytest.skip("this engine is in a swarm already: swarm-down would not leave it")
    networks_before = swarm_networks(docker)
    port = free_port()
    up = subprocess.run(["make", "swarm-up", f"PORT={port}", "N=2", f"STACK={stack}"], cwd=REPO,
                        capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, up.stderr
        assert "initialised a swarm" in up.stdout
        url = f"http://127.0.0.1:{port}"

        def replicas():
            try:
                return httpx.get(f"{url}/rep", timeout=5).json()["message"]["replicas"]
            except (httpx.HTTPError, ValueError):
                return None

        names = wait_until(lambda: (r := replicas()) and len(r) == 2 and r, 120, what="the stack")
        assert httpx.get(f"{url}/home", timeout=10).status_code == 200
        balancer = docker.services.get(f"{stack}_balancer").attrs["Spec"]
        assert balancer["TaskTemplate"]["Placement"]["Constraints"] == ["node.role == manager"]
        # The replicas are services the balancer made, reached by name on the overlay.
        victim = docker.services.get(f"{stack}-{names[0]}")
        assert victim.attrs["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
        (container,) = docker.containers.list(
            filters={"label": [f"dslab.stack={stack}", f"dslab.replica={names[0]}"]})
        container.kill()
        wait_until(lambda: (r := replicas()) and names[0] not in r and len(r) == 2, 60,
                   what="a replacement")
    finally:
        down = subprocess.run(["make", "swarm-down", f"STACK={stack}"], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    assert "left the swarm" in down.stdout
    assert swarm_state(docker) == "inactive"
    label = {"label": f"dslab.stack={stack}"}
    assert docker.containers.list(all=True, filters=label) == []
    assert docker.volumes.list(filters=label) == []
    assert docker.networks.list(filters=label) == []
    assert swarm_networks(docker) == networks_before  # docker_gwbridge too


def make(backend: str, stack: str, request: pytest.FixtureRequest):
    spec = ReplicaSpec(module="dslab.replica", image="dslab-replica:latest")
    if backend == "process":
        return ProcessSupervisor(spec)
    if backend == "docker":
        return DockerSupervisor(spec, stack=stack, address="loopback")
    request.getfixturevalue("swarm")
    return SwarmSupervisor(spec, stack=stack, address="loopback")


def kill_replica(docker, backend: str, supervisor, stack: str, name: str) -> None:
    """Kill a replica outside its supervisor: its process, its container, its task's container."""
    if backend == "process":
        os.kill(supervisor.pid(name), 9)
        return
    filters = {"label": [f"dslab.stack={stack}", f"dslab.replica={name}"]}
    (container,) = docker.containers.list(filters=filters)
    container.kill()


@pytest.mark.parametrize("backend", ["process", "docker", "swarm"])
def test_one_interface_over_every_backend(docker, stack, backend, request):
    async def scenario():
        supervisor = make(backend, stack, request)
        async with supervisor:
            a, b = await asyncio.gather(supervisor.spawn("A1"), supervisor.spawn("B2"))
            assert {r.name for r in supervisor.replicas()} == {"A1", "B2"}
            async with httpx.AsyncClient(timeout=10) as client:
                home = await client.get(f"http://{a.host}:{a.port}/home")
            assert home.json()["message"] == "Hello from Server: A1"
            assert supervisor.alive("A1") and supervisor.alive("B2")
            await supervisor.remove("A1")
            assert not supervisor.alive("A1") and [r.name for r in supervisor.replicas()] == ["B2"]
            with pytest.raises(SpawnError):
                await supervisor.spawn("B2")
            kill_replica(docker, backend, supervisor, stack, "B2")
            deadline = time.monotonic() + 5
            while supervisor.alive("B2") and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return supervisor.alive("B2")

    assert asyncio.run(scenario()) is False


def test_a_replica_is_a_service_of_one_task_on_the_overlay_with_restarts_off(swarm, stack):
    async def scenario():
        spec = ReplicaSpec(module="dslab.replica", image="dslab-replica:latest", cpus=0.5)
        async with SwarmSupervisor(spec, stack=stack, address="loopback") as supervisor:
            await supervisor.spawn("S1")
            service = swarm.services.get(f"{stack}-S1").attrs["Spec"]
            task = service["TaskTemplate"]
            assert service["Labels"] == {"dslab.stack": stack, "dslab.role": "replica",
                                         "dslab.replica": "S1"}
            assert service["Mode"] == {"Replicated": {"Replicas": 1}}
            assert service["EndpointSpec"]["Mode"] == "dnsrr"
            assert task["RestartPolicy"]["Condition"] == "none"
            assert task["Resources"]["Limits"]["NanoCPUs"] == 500_000_000
            assert task["ContainerSpec"]["Hostname"] == "S1"
            assert "SERVER_ID=S1" in task["ContainerSpec"]["Env"]
            (attachment,) = task["Networks"]
            network = swarm.networks.get(attachment["Target"])
            assert network.attrs["Driver"] == "overlay" and network.attrs["Attachable"]
            assert attachment["Aliases"] == ["S1"]  # the contract's hostname, on every node
            # Killed, it stays dead: the balancer, not Swarm, replaces it under a new name.
            kill_replica(swarm, "swarm", supervisor, stack, "S1")
            wait_until(lambda: not supervisor.alive("S1") or None, 5, what="S1 seen dead")
            time.sleep(1)  # what a restart policy would have used to start it again
            assert len(swarm.api.tasks(filters={"service": f"{stack}-S1"})) == 1

    asyncio.run(scenario())
    assert not swarm.networks.list(names=[f"{stack}-net"])  # its own network goes with it


def test_a_killed_task_is_replaced_under_load_with_no_failed_request(swarm, stack):
    balancer = BalancerProcess(args=["-n", "3", "--hash", "blake2b", "--backend", "swarm",
                                     "--docker-address", "loopback", "--stack", stack]).start()
    try:
        with httpx.Client(base_url=balancer.url, timeout=30) as client:
            assert client.get("/rep").json()["message"]["replicas"] == ["Server1", "Server2", "Server3"]
            with HomeLoad(balancer.url) as load:
                wait_until(lambda: load.ok > 100, 30, what="load")
                (container,) = swarm.containers.list(
                    filters={"label": [f"dslab.stack={stack}", "dslab.replica=Server2"]})
                container.kill()
                killed = time.monotonic()
                names = wait_until(lambda: (n := client.get("/rep").json()["message"]["replicas"])
                                   and "Server2" not in n and len(n) == 3 and n, 30,
                                   what="a replacement service")
                took = time.monotonic() - killed
                served = load.ok
                wait_until(lambda: load.ok > served + 100, 30, what="load after it")
            assert load.failed == []
            assert took < detection_time("dslab.balancer") + 2 * SPAWN_BUDGET["container"]
            newcomer = (set(names) - {"Server1", "Server3"}).pop()
            assert swarm.services.get(f"{stack}-{newcomer}")
            # The dead one's service goes too (a label, not a name filter: names match as
            # prefixes, and the newcomer may be Server2xxxx).
            wait_until(lambda: not swarm.services.list(filters={"label": [
                f"dslab.stack={stack}", "dslab.replica=Server2"]}) or None, 30,
                what="Server2's service to be removed")
    finally:
        assert balancer.stop() == 0
    assert not swarm.services.list(filters={"label": f"dslab.stack={stack}"})


def test_a_shard_server_killed_with_data_is_replaced_and_refilled(swarm, stack, tmp_path):
    db = BalancerProcess("dslab.db", args=["--state-dir", str(tmp_path), "--backend", "swarm",
                                           "--docker-address", "loopback", "--stack", stack]).start()
    try:
        with httpx.Client(base_url=db.url, timeout=120) as client:
            assert client.post("/init", json=seed_init()).status_code == 200
            rows = [row(i) for i in range(0, 16384, 37)]
            assert client.post("/write", json={"data": rows}).status_code == 200
            (container,) = swarm.containers.list(
                filters={"label": [f"dslab.stack={stack}", "dslab.replica=Server0"]})
            container.kill()
            servers = wait_until(lambda: (s := client.get("/status").json()["servers"])
                                 and "Server0" not in s and len(s) == 6 and s, 90,
                                 what="Server0's service to be replaced")
            newcomer = (set(servers) - {"Server1", "Server3", "Server4", "Server5", "Server6"}).pop()
            assert servers[newcomer] == ["sh1", "sh2"]
            everything = client.post("/read", json={"Stud_id": {"low": 0, "high": 16383}}).json()
            assert everything["data"] == rows
            # The newcomer, asked directly on its task's published port, holds every row.
            (task,) = swarm.api.tasks(filters={"service": f"{stack}-{newcomer}",
                                               "desired-state": "running"})
            port = task["Status"]["PortStatus"]["Ports"][0]["PublishedPort"]
            copy = httpx.request("GET", f"http://127.0.0.1:{port}/copy",
                                 json={"shards": ["sh1", "sh2"]}, timeout=60).json()
            assert copy["sh1"] == [r for r in rows if r["Stud_id"] < 4096]
            assert copy["sh2"] == [r for r in rows if 4096 <= r["Stud_id"] < 8192]
    finally:
        assert db.stop() == 0


def test_a_restarted_part2_balancer_starts_its_servers_where_their_volumes_are(swarm, stack,
                                                                                 tmp_path):
    args = ["--state-dir", str(tmp_path), "--backend", "swarm", "--docker-address", "loopback",
            "--stack", stack]
    rows = [row(i) for i in range(0, 16384, 211)]
    status = written_then_stopped(args, rows)
    assert not swarm.services.list(filters={"label": f"dslab.stack={stack}"})
    node = swarm.info()["Swarm"]["NodeID"]
    second = BalancerProcess("dslab.db", args=args).start()
    try:
        with httpx.Client(base_url=second.url, timeout=120) as client:
            assert client.get("/status").json() == status
            data = client.post("/read", json={"Stud_id": {"low": 0, "high": 16383}}).json()["data"]
            assert data == rows
            # Started again in place: constrained to the node that holds its volume.
            spec = swarm.services.get(f"{stack}-Server0").attrs["Spec"]["TaskTemplate"]
            assert spec["Placement"]["Constraints"] == [f"node.id=={node}"]
            removed = client.request("DELETE", "/rm", json={"n": 1, "servers": ["Server6"]})
            assert removed.status_code == 200
            assert not swarm.configs.list(filters={"name": f"{stack}-Server6-node"})
    finally:
        assert second.stop() == 0
    reset = BalancerProcess("dslab.db", args=[*args, "--reset"]).start()
    reset.stop()
    label = {"label": f"dslab.stack={stack}"}
    assert swarm.volumes.list(filters=label) == [] and swarm.configs.list(filters=label) == []
