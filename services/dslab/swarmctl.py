"""``make swarm-up`` / ``make swarm-down``: the stack deployed on Docker Swarm, and removed.

    up     initialise a swarm on this engine if it is in none (marking the node, so that
           ``down`` leaves only a swarm it made), then ``docker stack deploy`` docker-stack.yml
    down   every service, config, network and volume labelled with the stack (the stack
           file's and what the balancer made itself); then, if ``up`` initialised the swarm,
           leave it and remove the ``docker_gwbridge`` network that leaving leaves behind

The Docker CLI deploys the stack file (docker-py has no ``stack deploy``); the rest goes
through the Docker SDK.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker

from .supervisor.docker import DockerUnavailable, docker_client
from .supervisor.swarm import any_running, remove_swarm_stack, swarm_state

__all__ = ["INITIALISED", "down", "main", "swarm_for_a_while", "up"]

ROOT = Path(__file__).resolve().parents[2]
INITIALISED = "dslab.initialised-swarm"  # a label on the node whose swarm `up` made


def _docker(*args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(["docker", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} failed: {done.stderr.strip()}")


@contextlib.contextmanager
def swarm_for_a_while(client: Any, advertise: str = "127.0.0.1") -> Iterator[bool]:
    """This engine as a swarm manager for the block: its own swarm if it is one, or a swarm
    initialised here and left afterwards, with the ``docker_gwbridge`` network that leaving
    leaves behind, so the engine ends as it started (tests, benchmarks). Yields whether it
    initialised one."""
    state = swarm_state(client)
    if state not in ("inactive", "active"):
        raise SystemExit(f"this engine's swarm is {state}: fix that first (docker info)")
    networks_before = {n.name for n in client.networks.list()}
    if state == "inactive":
        client.swarm.init(advertise_addr=advertise)
    try:
        yield state == "inactive"
    finally:
        if state == "inactive":
            client.swarm.leave(force=True)
            for network in client.networks.list(names=["docker_gwbridge"]):
                if network.name not in networks_before:
                    network.remove()


def up(stack: str, advertise: str, stack_file: Path) -> None:
    client = docker_client()
    state = swarm_state(client)
    if state == "inactive":
        client.swarm.init(advertise_addr=advertise)
        node = client.nodes.get(client.info()["Swarm"]["NodeID"])
        spec = node.attrs["Spec"]
        spec["Labels"] = {**spec.get("Labels", {}), INITIALISED: "true"}
        node.update(spec)
        print(f"initialised a swarm on this engine, advertised at {advertise} "
              "(make swarm-down leaves it)", flush=True)
    elif state != "active":
        raise SystemExit(f"this engine's swarm is {state}: fix that first (docker info)")
    elif not client.info()["Swarm"].get("ControlAvailable"):
        raise SystemExit("this engine is a swarm worker: run make swarm-up on a manager")
    ended = _ended_services(client, stack)
    _docker("stack", "deploy", "-c", str(stack_file), stack, env={**os.environ, "STACK": stack})
    for service in ended:
        # Its task ended (its node was lost: restart policy none) and `stack deploy` leaves an
        # unchanged service as it is: start it again, on the state its volumes kept (reloaded:
        # the deploy has just updated its version).
        service.reload()
        service.force_update()
        print(f"started {service.name} again (its task had ended)", flush=True)
    print(f"deployed stack {stack}: the balancer publishes port {os.environ.get('PORT', '5000')} "
          "on the manager it runs on", flush=True)


def _ended_services(client: Any, stack: str) -> list[Any]:
    """The stack file's services whose every task has ended."""
    services = client.services.list(filters={"label": f"com.docker.stack.namespace={stack}"})
    return [s for s in services
            if not any_running(s.tasks())]


def down(stack: str) -> None:
    client = docker_client()
    if swarm_state(client) != "active":
        print("this engine is in no swarm: nothing to remove", flush=True)
        return
    # Every service of the stack file and every one its balancer made carries the stack's
    # label: removing by label is `docker stack rm` and more (it cannot remove a network that
    # the balancer's services still use).
    removed = remove_swarm_stack(stack)
    print("removed " + ", ".join(f"{n} {what}" for what, n in removed.items()), flush=True)
    node = client.nodes.get(client.info()["Swarm"]["NodeID"])
    if node.attrs["Spec"].get("Labels", {}).get(INITIALISED) == "true":
        client.swarm.leave(force=True)
        for network in client.networks.list(names=["docker_gwbridge"]):
            _remove_when_released(network)
        print("left the swarm make swarm-up initialised", flush=True)


def _remove_when_released(network: Any, timeout: float = 30.0) -> None:
    """Remove the swarm's gateway bridge once the engine has let go of it: right after a
    swarm is left, the ingress sandbox's endpoint may still be attached (CI saw the removal
    refused with "has active endpoints")."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            network.remove()
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if "active endpoints" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dslab.swarmctl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--stack", default=os.environ.get("STACK", "dslab"))
    parser.add_argument("--advertise-addr", default="127.0.0.1",
                        help="the address other nodes reach this one at, when a swarm is made")
    parser.add_argument("--stack-file", type=Path, default=ROOT / "docker-stack.yml")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            up(args.stack, args.advertise_addr, args.stack_file)
        else:
            down(args.stack)
    except DockerUnavailable as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
