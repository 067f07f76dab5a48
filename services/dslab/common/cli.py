"""What both balancers' command lines share: the backend options and the process entry."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ..supervisor import BACKENDS, SupervisorError
from .runtime import die_with_parent, install_uvloop

__all__ = ["add_backend_options", "run_main"]


def add_backend_options(p: argparse.ArgumentParser, image_flag: str, image_env: str,
                        image_default: str) -> None:
    """--backend, the image of what it starts, --stack and --docker-address (each with env)."""
    env = os.environ.get
    p.add_argument("--backend", choices=BACKENDS, default=env("BACKEND", "process"),
                   help="how replicas run: local processes or Docker containers (env BACKEND)")
    p.add_argument(image_flag, default=env(image_env, image_default),
                   help=f"image to start, Docker backend (env {image_env})")
    p.add_argument("--stack", default=env("STACK", "dslab"),
                   help="label of the containers this balancer starts (env STACK)")
    p.add_argument("--docker-address", choices=["name", "loopback"],
                   default=env("DOCKER_ADDRESS", "name"),
                   help="reach containers by name (balancer in Docker) or on published loopback "
                        "ports (balancer on the host) (env DOCKER_ADDRESS)")
    p.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)


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
