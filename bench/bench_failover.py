"""Measure, for every backend in one run: the time from killing a replica to its replacement
serving, from killing ``--kill`` replicas at once to every replacement serving, and the time of
POST /add for n new replicas.

The process backend kills with SIGKILL, the Docker backend with ``docker kill``, the Swarm
backend with ``docker kill`` of the task's container (on a single-node swarm: this engine's
own, or one initialised for the run and left afterwards). "Serving"
means a GET /home answered by the replacement (seen in ``X-Served-By``); clients send a fresh
request id every few milliseconds meanwhile. Prints the median and the range of ``--rounds``.

``--cluster also|only``: on a cluster of three Docker engines (``dslab.cluster``, made for the run
and removed): the Part 1 stack deployed on it with 6 replicas, a worker node killed whole each
round (the one holding the most replicas), timed until every replica it held is replaced on
the surviving nodes and each replacement has answered a request; a fresh cluster each round.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from dslab.cluster import IMAGES, Cluster, down, kill_node, replica_nodes, save_images, swarmctl, up
from dslab.stack import BalancerProcess, wait_until
from dslab.supervisor.docker import DockerUnavailable, docker_client
from dslab.swarmctl import swarm_for_a_while

STACK = "bench-failover"


def replicas(client: httpx.Client) -> list[str]:
    return client.get("/rep").json()["message"]["replicas"]


def kill(backend: str, balancer: BalancerProcess, name: str, stack: str = STACK) -> None:
    if backend == "process":
        os.kill(balancer.replica_processes()[name].pid, signal.SIGKILL)
    else:  # a container, or a Swarm task's container: both carry the stack's labels
        (container,) = docker_client().containers.list(
            filters={"label": [f"dslab.stack={stack}", f"dslab.replica={name}"]})
        container.kill()


def time_to_serving(backend: str, balancer: BalancerProcess, client: httpx.Client,
                    victims: int = 1, stack: str = STACK) -> float:
    """Seconds from ``victims`` replicas killed at once to a replacement of each serving."""
    before = replicas(client)
    for victim in before[:victims]:
        kill(backend, balancer, victim, stack)
    started = time.perf_counter()
    served: set[str] = set()
    rid = 0
    while time.perf_counter() - started < 30:
        rid += 1
        with contextlib.suppress(httpx.HTTPError):
            served_by = client.get("/home", headers={"X-Request-ID": str(rid)}).headers.get(
                "X-Served-By")
            if served_by and served_by not in before:
                served.add(served_by)
        if len(served) >= victims:
            return time.perf_counter() - started
    raise RuntimeError(f"no replacement for {before[:victims]} served within 30s "
                       f"(served: {served})")


def time_to_add(client: httpx.Client, n: int) -> float:
    started = time.perf_counter()
    response = client.post("/add", json={"n": n})
    took = time.perf_counter() - started
    response.raise_for_status()
    added = response.json()["message"]["replicas"][-n:]
    client.request("DELETE", "/rm", json={"n": n, "hostnames": added}).raise_for_status()
    return took


def measure(backend: str, rounds: int, add_n: int, kill_n: int,
            code: Path | None = None) -> dict[str, list[float]]:
    """The rows for one backend, of this checkout's balancer or of the one in ``code``."""
    stack = STACK if code is None else f"{STACK}-compared"
    args = ["-n", "3", "--hash", "blake2b", "--backend", backend]
    if backend in ("docker", "swarm"):
        args += ["--docker-address", "loopback", "--stack", stack]
    env = None if code is None else {**os.environ, "PYTHONPATH": str(code / "services")}
    killed = f"kill {kill_n} -> all replacements serve"
    results: dict[str, list[float]] = {"kill -> replacement serves": [], killed: [],
                                       f"POST /add n={add_n}": [], "POST /add n=1": []}
    with BalancerProcess(args=args, env=env) as balancer, \
            httpx.Client(base_url=balancer.url, timeout=60) as client:
        for _ in range(rounds):
            results["kill -> replacement serves"].append(
                time_to_serving(backend, balancer, client, stack=stack))
            results[killed].append(time_to_serving(backend, balancer, client, kill_n, stack))
            results[f"POST /add n={add_n}"].append(time_to_add(client, add_n))
            results["POST /add n=1"].append(time_to_add(client, 1))
    return results


def node_loss(rounds: int, n: int = 6) -> list[float]:
    """Seconds from a worker node killed to all it held replaced and serving, a cluster made
    for each round: a node powered on again is slow to start its first task (10 s here, its
    overlay attached anew), which would be timed in the next round instead of the loss."""
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as folder:
        archive = Path(folder) / "images.tar"
        save_images(Cluster(), IMAGES, archive)
        return [node_lost_once(archive, n, r) for r in range(rounds)]


def node_lost_once(archive: Path, n: int, round_: int) -> float:
    cluster = Cluster(name="dslab-bench", subnet="10.215.0.0/24")
    up(cluster, say=lambda _: None, archive=archive)
    try:
        # BLAKE2b, as the other columns: with the seed's hash, consecutive request ids reach
        # few slots, and a replacement may never be sent one.
        swarmctl(cluster, "up", "bench", APP="dslab.balancer", PORT="5000", N=str(n),
                 HASH="blake2b")
        with httpx.Client(base_url=f"http://{cluster.address(0)}:5000", timeout=60) as client:
            def placed() -> dict[str, str] | None:
                try:
                    now = replica_nodes(client.get("/metrics").text)
                except httpx.HTTPError:
                    return None
                return now if len(now) == n else None

            before = wait_until(placed, 120, interval=0.2, what=f"{n} replicas placed")
            held = {f"node{i}": [name for name, node in before.items() if node == f"node{i}"]
                    for i in (1, 2)}
            victim = max(held, key=lambda node: len(held[node]))
            kill_node(cluster, int(victim.removeprefix("node")))
            started = time.perf_counter()
            served: set[str] = set()
            rid = 0
            while True:
                rid += 1
                with contextlib.suppress(httpx.HTTPError):
                    reply = client.get("/home", headers={"X-Request-ID": str(rid)})
                    served.add(reply.headers.get("X-Served-By", ""))
                now = placed() or {}
                new = set(now) - set(before)
                if (now and victim not in now.values() and not set(held[victim]) & set(now)
                        and new <= served):
                    break
                if time.perf_counter() - started > 120:
                    raise RuntimeError(f"{held[victim]} on {victim} not replaced and serving "
                                       f"within 120s: placed {now}, served {served}")
            took = time.perf_counter() - started
            print(f"round {round_ + 1}: {victim} lost ({len(held[victim])} of {n} replicas): "
                  f"{took:.2f}s", flush=True)
            return took
    finally:
        down(cluster, say=lambda _: None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--add", type=int, default=3, help="n of the larger POST /add")
    ap.add_argument("--kill", type=int, default=2, help="replicas (of 3) killed at once")
    ap.add_argument("--compare", type=Path, help="also the balancer of the checkout at PATH")
    ap.add_argument("--cluster", choices=["no", "also", "only"], default="no",
                    help="time a worker node lost on a cluster of three engines: "
                         "besides the backends' table, or alone")
    args = ap.parse_args()
    if args.cluster != "only":
        backends_table(args.rounds, args.add, args.kill, args.compare)
    if args.cluster != "no":
        times = node_loss(args.rounds)
        print(f"\ncluster of 3 engines, 6 replicas: node lost -> all it held replaced and serving: "
              f"{statistics.median(times):.3f} [{min(times):.3f}, {max(times):.3f}] s")


def backends_table(rounds: int, add: int, kill_n: int, compare: Path | None) -> None:
    backends = ["process"]
    try:
        client = docker_client()
        backends += ["docker", "swarm"]
    except DockerUnavailable as exc:
        print(f"(no Docker: {exc})")
    codes: dict[str, Path | None] = {"": None}
    if compare is not None:
        codes[f" ({compare.name})"] = compare.resolve()
    columns = [(backend + label, backend, code) for backend in backends
               for label, code in codes.items()]
    print(f"{os.cpu_count()} cores; 3 replicas; {rounds} rounds; median [min, max] seconds\n")
    table = {}
    for column, backend, code in columns:
        with swarm_for_a_while(client) if backend == "swarm" else contextlib.nullcontext():
            table[column] = measure(backend, rounds, add, kill_n, code)
        print(f"  {column}: measured", flush=True)
    print(f"\n{'':34s}" + "".join(f"{c:>26s}" for c, _, _ in columns))
    for metric in table[columns[0][0]]:
        cells = []
        for column, _, _ in columns:
            values = table[column][metric]
            cells.append(f"{statistics.median(values):7.3f} [{min(values):.3f}, {max(values):.3f}]")
        print(f"{metric:34s}" + "".join(f"{c:>26s}" for c in cells))


if __name__ == "__main__":
    main()
