"""Measure, for every backend in one run: the time from killing a replica to its replacement
serving, and the time of POST /add for n new replicas.

The process backend kills with SIGKILL, the Docker backend with ``docker kill``, the Swarm
backend with ``docker kill`` of the task's container (on a single-node swarm: this engine's
own, or one initialised for the run and left afterwards). "Serving"
means a GET /home answered by the replacement (seen in ``X-Served-By``); clients send a fresh
request id every few milliseconds meanwhile. Prints the median and the range of ``--rounds``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import time

import httpx

from dslab.stack import BalancerProcess
from dslab.supervisor.docker import DockerUnavailable, docker_client
from dslab.swarmctl import swarm_for_a_while

STACK = "bench-failover"


def replicas(client: httpx.Client) -> list[str]:
    return client.get("/rep").json()["message"]["replicas"]


def kill(backend: str, balancer: BalancerProcess, name: str) -> None:
    if backend == "process":
        os.kill(balancer.replica_processes()[name].pid, signal.SIGKILL)
    else:  # a container, or a Swarm task's container: both carry the stack's labels
        (container,) = docker_client().containers.list(
            filters={"label": [f"dslab.stack={STACK}", f"dslab.replica={name}"]})
        container.kill()


def time_to_serving(backend: str, balancer: BalancerProcess, client: httpx.Client) -> float:
    before = replicas(client)
    victim = before[0]
    kill(backend, balancer, victim)
    started = time.perf_counter()
    rid = 0
    while time.perf_counter() - started < 30:
        rid += 1
        served_by = client.get("/home", headers={"X-Request-ID": str(rid)}).headers.get("X-Served-By")
        if served_by and served_by not in before:
            return time.perf_counter() - started
    raise RuntimeError(f"no replacement for {victim} served within 30s")


def time_to_add(client: httpx.Client, n: int) -> float:
    started = time.perf_counter()
    response = client.post("/add", json={"n": n})
    took = time.perf_counter() - started
    response.raise_for_status()
    added = response.json()["message"]["replicas"][-n:]
    client.request("DELETE", "/rm", json={"n": n, "hostnames": added}).raise_for_status()
    return took


def measure(backend: str, rounds: int, add_n: int) -> dict[str, list[float]]:
    args = ["-n", "3", "--hash", "blake2b", "--backend", backend]
    if backend in ("docker", "swarm"):
        args += ["--docker-address", "loopback", "--stack", STACK]
    results: dict[str, list[float]] = {"kill -> replacement serves": [], f"POST /add n={add_n}": [],
                                       "POST /add n=1": []}
    with BalancerProcess(args=args) as balancer, httpx.Client(base_url=balancer.url, timeout=60) as client:
        for _ in range(rounds):
            results["kill -> replacement serves"].append(time_to_serving(backend, balancer, client))
            results[f"POST /add n={add_n}"].append(time_to_add(client, add_n))
            results["POST /add n=1"].append(time_to_add(client, 1))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--add", type=int, default=3, help="n of the larger POST /add")
    args = ap.parse_args()
    backends = ["process"]
    try:
        client = docker_client()
        backends += ["docker", "swarm"]
    except DockerUnavailable as exc:
        print(f"(no Docker: {exc})")
    print(f"{os.cpu_count()} cores; 3 replicas; {args.rounds} rounds; median [min, max] seconds\n")
    print(f"{'':28s}" + "".join(f"{b:>24s}" for b in backends))
    table = {}
    for backend in backends:
        with swarm_for_a_while(client) if backend == "swarm" else contextlib.nullcontext():
            table[backend] = measure(backend, args.rounds, args.add)
    for metric in table["process"]:
        cells = []
        for backend in backends:
            values = table[backend][metric]
            cells.append(f"{statistics.median(values):7.3f} [{min(values):.3f}, {max(values):.3f}]")
        print(f"{metric:28s}" + "".join(f"{c:>24s}" for c in cells))


if __name__ == "__main__":
    main()
