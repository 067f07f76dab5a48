"""What both balancers' command lines share: the backend options and the process entry."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ..common.runtime import die_with_parent, install_uvloop
from ..supervisor import BACKENDS, SupervisorError

__all__ = ["add_backend_options", "add_capacity_option", "add_heartbeat_options", "heartbeat_settings",
           "run_main"]


def add_backend_options(p: argparse.ArgumentParser, image_flag: str, image_env: str,
                        image_default: str) -> None:
    """--backend, the image of what it starts, --stack and --docker-address (each with env)."""
    env = os.environ.get
    p.add_argument("--backend", choices=BACKENDS, default=env("BACKEND", "process"),
                   help="how replicas run: local processes, Docker containers, or Swarm services "
                        "over a swarm's nodes (env BACKEND)")
    p.add_argument(image_flag, default=env(image_env, image_default),
                   help=f"image to start, Docker and Swarm backends (env {image_env})")
    p.add_argument("--stack", default=env("STACK", "dslab"),
                   help="label and name prefix of the containers or services this balancer "
                        "starts (env STACK)")
    p.add_argument("--docker-address", choices=["name", "loopback"],
                   default=env("DOCKER_ADDRESS", "name"),
                   help="reach containers by name (balancer in Docker or in the swarm) or on "
                        "published loopback ports (balancer on the host) (env DOCKER_ADDRESS)")
    p.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)


def _cpus(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a CPU capacity must be above 0 cores, got {text}")
    return value


def add_capacity_option(p: argparse.ArgumentParser, flag: str, env_name: str, what: str) -> None:
    """A CPU capacity per replica, in cores (a fraction allowed): a cgroup with a CFS quota
    per replica (process backend, root), the container's CPU limit (Docker backend)."""
    value = os.environ.get(env_name, "")
    p.add_argument(flag, type=_cpus, default=_cpus(value) if value else None, metavar="C",
                   help=f"give every {what} a capacity of C cores: a cgroup with a CPU quota "
                        f"(process backend; needs root) or the container's CPU limit "
                        f"(Docker); off by default (env {env_name})")


def add_heartbeat_options(p: argparse.ArgumentParser, interval: float, timeout: float,
                          misses: int) -> None:
    """--heartbeat-interval, --heartbeat-timeout, --heartbeat-misses (each with env): a replica
    is dead after ``misses`` heartbeats in a row got no answer within ``timeout`` seconds, so
    a hung one is found within about ``misses * (interval + timeout)`` seconds."""
    env = os.environ.get
    p.add_argument("--heartbeat-interval", type=float,
                   default=float(env("HEARTBEAT_INTERVAL", str(interval))),
                   help="seconds between heartbeat rounds (env HEARTBEAT_INTERVAL)")
    p.add_argument("--heartbeat-timeout", type=float,
                   default=float(env("HEARTBEAT_TIMEOUT", str(timeout))),
                   help="seconds a heartbeat may take (env HEARTBEAT_TIMEOUT)")
    p.add_argument("--heartbeat-misses", type=int,
                   default=int(env("HEARTBEAT_MISSES", str(misses))),
                   help="missed heartbeats in a row that make a replica dead (env HEARTBEAT_MISSES)")


def heartbeat_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"heartbeat_interval": args.heartbeat_interval,
            "heartbeat_timeout": args.heartbeat_timeout,
            "heartbeat_misses": args.heartbeat_misses}


def run_main(run: Callable[[argparse.Namespace], Coroutine[Any, Any, None]],
             args: argparse.Namespace) -> None:
    """Logging, die with the parent (a killed `make run-*` still cleans up), uvloop, and a
    one-line error instead of a traceback when the backend cannot work."""
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    die_with_parent()
    install_uvloop()
    try:
        asyncio.run(run(args))
    except SupervisorError as exc:  # Docker asked for and absent, an image missing, ...
        sys.exit(f"error: {exc}")
