"""``make cluster-up`` / ``make cluster-down``: a swarm of three Docker engines on this machine.

Each node is a container of the node image (``docker/node/Dockerfile``: the project's base plus
Debian's ``docker.io``) running an engine of its own (Docker in Docker): three hosts with their
own addresses on the cluster's network, their own engines, images and swarm roles (node0 the
manager, the others workers). What the stack does on it is what it would do on three machines;
a node can be killed whole or cut off from the others, which one engine cannot show.

    up     build the node image if missing, start the nodes (each engine's storage on a volume
           of its own), load the project's images into every engine (``docker save`` once, one
           ``docker load`` per node, in parallel) and form the swarm
    down   remove the nodes, their volumes, the network, the engines' sockets and the cgroup
           folders the inner engines made; the host engine's own swarm is never touched
    env    print the ``DOCKER_HOST`` that points at the manager's engine

How a node runs without ``--privileged`` (this machine's bounding set lacks CAP_SYS_RESOURCE):
SYS_ADMIN and NET_ADMIN, seccomp, AppArmor and the masked system paths off, ``/sys/fs/cgroup``
bound read-write and the inner engine's containers under a cgroup parent named after its node,
so that the three engines' cgroups do not collide with each other's or the host engine's. The
host reaches each engine on a Unix socket bound out of its node (``/run/<cluster>/node<i>``):
nothing listens on TCP without TLS.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import docker.types
from prometheus_client.parser import text_string_to_metric_families

from .supervisor.cgroups import rmdir_when_empty
from .supervisor.docker import DOCKER_ERRORS, DockerUnavailable

__all__ = ["IMAGES", "NODE_IMAGE", "Cluster", "cut_off", "down", "host_engine",
           "host_environment", "kill_node", "main", "node_client", "ready_nodes", "reconnect",
           "replica_nodes", "restart_node", "save_images", "swarmctl", "up"]

ROOT = Path(__file__).resolve().parents[2]
NODE_IMAGE = "dslab-node:latest"
IMAGES = ("dslab-balancer:latest", "dslab-replica:latest", "dslab-shard:latest")
LABEL_CLUSTER = "dslab.cluster"
CGROUP_ROOT = Path("/sys/fs/cgroup")
HEARTBEAT_NS = 1_000_000_000  # the swarm's dispatcher heartbeat period

Say = Callable[[str], None]


@dataclass(frozen=True)
class Cluster:
    """Where everything of a cluster is: names, addresses and sockets (no I/O here)."""

    name: str = "dslab-cluster"
    size: int = 3
    subnet: str = "10.213.0.0/24"

    def node(self, i: int) -> str:
        """Node ``i``'s container (and its engine's cgroup parent)."""
        return f"{self.name}-node{i}"

    def hostname(self, i: int) -> str:
        """The name node ``i`` has in the swarm (``docker node ls``, the stack's placement)."""
        return f"node{i}"

    def address(self, i: int) -> str:
        """Node ``i``'s fixed address on the cluster's network (it keeps it when reconnected)."""
        return str(ipaddress.ip_network(self.subnet)[10 + i])

    def volume(self, i: int) -> str:
        return f"{self.node(i)}-engine"

    def socket_dir(self, i: int) -> Path:
        return Path("/run") / self.name / self.hostname(i)

    def docker_host(self, i: int = 0) -> str:
        """``DOCKER_HOST`` for node ``i``'s engine (0: the manager)."""
        return f"unix://{self.socket_dir(i) / 'docker.sock'}"

    @property
    def nodes(self) -> range:
        return range(self.size)


def host_environment(cluster: Cluster) -> dict[str, str]:
    """This process's environment for the engine the nodes run on: without a ``DOCKER_HOST``
    that points into the cluster (left by ``eval $(make -s cluster-env)``)."""
    env = dict(os.environ)
    if env.get("DOCKER_HOST", "").startswith(f"unix://{Path('/run') / cluster.name}/"):
        del env["DOCKER_HOST"]
    return env


def host_engine(cluster: Cluster) -> Any:
    """The engine the nodes run on (whatever ``DOCKER_HOST`` says of the cluster's own)."""
    try:
        client = docker.from_env(environment=host_environment(cluster))
        client.ping()
    except DOCKER_ERRORS as exc:
        raise DockerUnavailable(f"Docker was asked for but no engine answers: {exc}") from exc
    return client


def node_client(cluster: Cluster, i: int, timeout: int = 60) -> Any:
    return docker.DockerClient(base_url=cluster.docker_host(i), timeout=timeout)


class _Clock:
    """Progress lines with the time since ``up`` began."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        self.say(f"[{time.monotonic() - self.start:5.1f}s] {message}")


# --- up ----------------------------------------------------------------------------------------

def up(cluster: Cluster, *, base: str = "dslab-base:bookworm", images: tuple[str, ...] = IMAGES,
       say: Say = print, engine_timeout: float = 60.0, archive: Path | None = None) -> float:
    """Start the cluster; returns the seconds it took to be ready. A failure, or Ctrl-C, on the
    way leaves nothing behind (everything made so far is removed). ``archive``: ``images``
    already saved by ``save_images``."""
    host = host_engine(cluster)
    if host.containers.list(all=True, filters={"label": f"{LABEL_CLUSTER}={cluster.name}"}):
        raise SystemExit(f"cluster {cluster.name} is up already: `make cluster-down` first")
    missing = [image for image in images if not host.images.list(name=image)]
    if missing:
        raise SystemExit(f"images {', '.join(missing)} are missing: `make images` first")
    clock = _Clock(say)
    try:
        _build_node_image(host, cluster, base, clock)
        _start_nodes(host, cluster, clock)
        for i in cluster.nodes:
            _wait_engine(host, cluster, i, engine_timeout)
        clock(f"{cluster.size} engines answer")
        _load_images(cluster, images, clock, archive)
        _form_swarm(cluster, clock, timeout=engine_timeout)
    except BaseException:
        say("cluster-up failed: removing what it made")
        down(cluster, say=lambda _: None)
        raise
    ready = time.monotonic() - clock.start
    clock(f"cluster {cluster.name} ready: manager {cluster.hostname(0)} at "
          f"{cluster.address(0)}; DOCKER_HOST={cluster.docker_host(0)}")
    return ready


def _build_node_image(host: Any, cluster: Cluster, base: str, clock: _Clock) -> None:
    """Built every time: Docker's cache makes an unchanged build a second's work, and a changed
    docker/node is never run stale."""
    if not host.images.list(name=NODE_IMAGE):
        clock(f"building {NODE_IMAGE} from {base} (Debian's docker.io; about half a minute)")
    done = subprocess.run(
        ["docker", "build", "-q", "--label", "dslab.image=node", "--build-arg", f"BASE={base}",
         "-t", NODE_IMAGE, str(ROOT / "docker" / "node")], capture_output=True, text=True,
        env=host_environment(cluster))
    if done.returncode != 0:
        raise SystemExit(f"building {NODE_IMAGE} failed: {done.stderr.strip()}")


def _start_nodes(host: Any, cluster: Cluster, clock: _Clock) -> None:
    labels = {LABEL_CLUSTER: cluster.name}
    pool = docker.types.IPAMPool(subnet=cluster.subnet)
    host.networks.create(cluster.name, driver="bridge", labels=labels,
                         ipam=docker.types.IPAMConfig(pool_configs=[pool]))
    for i in cluster.nodes:
        host.volumes.create(cluster.volume(i), labels=labels)
        cluster.socket_dir(i).mkdir(parents=True, exist_ok=True)
        # The low-level API: the high-level one has no masked or read-only paths, and the
        # engine takes "systempaths=unconfined" only from the CLI, which sends empty lists.
        config = host.api.create_host_config(
            init=True, cap_add=["SYS_ADMIN", "NET_ADMIN"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            binds={cluster.volume(i): {"bind": "/var/lib/docker", "mode": "rw"},
                   str(CGROUP_ROOT): {"bind": str(CGROUP_ROOT), "mode": "rw"},
                   str(cluster.socket_dir(i)): {"bind": "/run/outside", "mode": "rw"}},
            network_mode=cluster.name)
        config.update(MaskedPaths=[], ReadonlyPaths=[])
        created = host.api.create_container(
            NODE_IMAGE, name=cluster.node(i), hostname=cluster.hostname(i), labels=labels,
            command=[f"--cgroup-parent=/{cluster.node(i)}", "--storage-driver",
                     "overlay2", "-H", "unix:///var/run/docker.sock",
                     "-H", "unix:///run/outside/docker.sock"],
            host_config=config,
            networking_config=host.api.create_networking_config({
                cluster.name: host.api.create_endpoint_config(
                    ipv4_address=cluster.address(i))}))
        host.api.start(created["Id"])
    clock(f"started {cluster.size} nodes on network {cluster.name} ({cluster.subnet})")


def _wait_engine(host: Any, cluster: Cluster, i: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(*DOCKER_ERRORS):
            node_client(cluster, i, timeout=5).ping()
            return
        container = host.containers.get(cluster.node(i))
        if container.status == "exited" or time.monotonic() > deadline:
            log = container.logs(tail=20).decode(errors="replace")
            raise SystemExit(f"the engine of {cluster.node(i)} did not answer ({container.status})"
                             f":\n{log}")
        time.sleep(0.2)


def save_images(cluster: Cluster, images: tuple[str, ...], archive: Path) -> None:
    """The images, from the engine the nodes run on, into one archive (``docker save``)."""
    _run(["docker", "save", "-o", str(archive), *images], env=host_environment(cluster))


def _load_images(cluster: Cluster, images: tuple[str, ...], clock: _Clock,
                 archive: Path | None) -> None:
    """Saved once (or given saved: several clusters in a row), loaded into every node at once:
    no registry needed."""
    with tempfile.TemporaryDirectory(prefix="dslab-cluster-") as folder:
        saved = archive or Path(folder) / "images.tar"
        if archive is None:
            save_images(cluster, images, saved)
            clock(f"saved {len(images)} images ({saved.stat().st_size / 2**20:.0f} MiB)")

        def load(i: int) -> None:
            _run(["docker", "-H", cluster.docker_host(i), "load", "-q", "-i", str(saved)])
            clock(f"images loaded into {cluster.hostname(i)}")

        with ThreadPoolExecutor(cluster.size) as pool:
            list(pool.map(load, cluster.nodes))


def _form_swarm(cluster: Cluster, clock: _Clock, timeout: float) -> None:
    manager = node_client(cluster, 0)
    ip0 = cluster.address(0)
    # Nodes report to the manager every second (Swarm's default: 5 s), so that a node lost is
    # marked down, and nothing more is placed on it, within seconds.
    manager.swarm.init(advertise_addr=ip0, listen_addr=f"{ip0}:2377",
                       dispatcher_heartbeat_period=HEARTBEAT_NS)
    manager.swarm.reload()
    token = manager.swarm.attrs["JoinTokens"]["Worker"]
    for i in cluster.nodes[1:]:
        node_client(cluster, i).swarm.join(
            remote_addrs=[f"{ip0}:2377"], join_token=token,
            advertise_addr=cluster.address(i), listen_addr=f"{cluster.address(i)}:2377")
    deadline = time.monotonic() + timeout
    while len(ready_nodes(manager)) < cluster.size:
        if time.monotonic() > deadline:
            raise SystemExit(f"the swarm has {sorted(ready_nodes(manager))} ready after "
                             f"{timeout:g}s, not {cluster.size} nodes")
        time.sleep(0.2)
    clock(f"swarm formed: {cluster.hostname(0)} manages, "
          f"{', '.join(cluster.hostname(i) for i in cluster.nodes[1:])} work")


def ready_nodes(manager: Any) -> set[str]:
    """The hostnames of the swarm's nodes that are ready, as the manager sees them."""
    return {n["Description"]["Hostname"] for n in manager.api.nodes()
            if n["Status"]["State"] == "ready"}


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()}")


# --- down --------------------------------------------------------------------------------------

def down(cluster: Cluster, *, say: Say = print) -> dict[str, int]:
    """Remove everything of the cluster, whatever state it is in; returns how many of each."""
    host = host_engine(cluster)
    labels = {"label": f"{LABEL_CLUSTER}={cluster.name}"}
    removed = {"nodes": 0, "volumes": 0, "networks": 0, "cgroup folders": 0}
    for container in host.containers.list(all=True, filters=labels):
        container.remove(force=True)  # the engine and all it ran die with the node's init
        removed["nodes"] += 1
    for volume in host.volumes.list(filters=labels):
        volume.remove(force=True)
        removed["volumes"] += 1
    for network in host.networks.list(filters=labels):
        network.remove()
        removed["networks"] += 1
    for i in cluster.nodes:
        removed["cgroup folders"] += _remove_cgroups(cluster.node(i))
    shutil.rmtree(Path("/run") / cluster.name, ignore_errors=True)
    say("removed " + ", ".join(f"{n} {what}" for what, n in removed.items()))
    return removed


def _remove_cgroups(parent: str, timeout: float = 10.0) -> int:
    """Remove the folders an inner engine made under ``parent`` in every hierarchy (cgroup v1:
    one per controller; v2: one), deepest first. Their processes died with the node; the
    kernel may take a moment to let the last go, hence the deadline."""
    tops = [top for top in (*CGROUP_ROOT.glob(f"*/{parent}"), CGROUP_ROOT / parent)
            if top.is_dir()]
    for top in tops:
        for folder, _, _ in os.walk(top, topdown=False):
            rmdir_when_empty(Path(folder), timeout)
    return len(tops)


# --- the stack on it ----------------------------------------------------------------------------

def swarmctl(cluster: Cluster, action: str, stack: str, **env: str) -> None:
    """``make swarm-up`` / ``make swarm-down`` with ``DOCKER_HOST`` at the manager's engine, as
    a user runs them (``env``: APP, PORT, N, ...)."""
    subprocess.run([sys.executable, "-m", "dslab.swarmctl", action, "--stack", stack],
                   cwd=ROOT, check=True, env={**os.environ, "DOCKER_HOST": cluster.docker_host(0),
                                              "STACK": stack, **env})


def replica_nodes(metrics: str) -> dict[str, str]:
    """Replica -> the node it runs on, from a balancer's /metrics text (``dslab_replica_node``)."""
    return {sample.labels["replica"]: sample.labels["node"]
            for family in text_string_to_metric_families(metrics)
            if family.name == "dslab_replica_node" for sample in family.samples}


# --- node faults -------------------------------------------------------------------------------

def kill_node(cluster: Cluster, i: int) -> None:
    """Node ``i`` dies whole: its engine and everything it ran, at once (a power cut)."""
    host_engine(cluster).containers.get(cluster.node(i)).kill()


def restart_node(cluster: Cluster, i: int, timeout: float = 60.0) -> None:
    """Node ``i`` powered on again: its engine starts on its volume (its swarm state, images,
    volumes and stopped containers as they were) and answers on its socket."""
    host = host_engine(cluster)
    host.containers.get(cluster.node(i)).start()
    _wait_engine(host, cluster, i, timeout)


def cut_off(cluster: Cluster, i: int) -> None:
    """Node ``i`` loses the cluster's network; it runs on, alone."""
    host_engine(cluster).networks.get(cluster.name).disconnect(cluster.node(i), force=True)


def reconnect(cluster: Cluster, i: int) -> None:
    """Node ``i`` is back on the cluster's network, at its own address."""
    host_engine(cluster).networks.get(cluster.name).connect(cluster.node(i),
                                                            ipv4_address=cluster.address(i))


# --- the command -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dslab.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "env"])
    parser.add_argument("--name", default=os.environ.get("CLUSTER", "dslab-cluster"))
    parser.add_argument("--size", type=int, default=int(os.environ.get("CLUSTER_SIZE", "3")))
    parser.add_argument("--subnet", default=os.environ.get("CLUSTER_SUBNET", "10.213.0.0/24"),
                        help="the cluster network's subnet (nodes at .10, .11, ...)")
    parser.add_argument("--base", default=os.environ.get("BASE", "dslab-base:bookworm"))
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error("--size must be at least 1")
    cluster = Cluster(args.name, args.size, args.subnet)
    try:
        if args.action == "up":
            up(cluster, base=args.base, say=lambda line: print(line, flush=True))
        elif args.action == "down":
            down(cluster, say=lambda line: print(line, flush=True))
        else:
            print(f"export DOCKER_HOST={cluster.docker_host(0)}")
    except DockerUnavailable as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
