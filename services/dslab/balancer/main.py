"""Run the Part 1 balancer: ``python -m dslab.balancer --port 5000 -n 3``.

Every option also reads an environment variable (shown in ``--help``), which is how Docker
Compose configures it. SIGINT or SIGTERM stops the balancer and every replica it started.
"""

from __future__ import annotations

import argparse
import logging
import os

from ..common.auth import add_admin_token_options, admin_token
from ..common.edge import add_edge_options, edge_limits
from ..common.front import Front, serve
from ..keeper.cli import (
    add_backend_options,
    add_capacity_option,
    add_heartbeat_options,
    heartbeat_settings,
    run_main,
)
from ..ring import ALGORITHMS, HASH_PAIRS, PROBING, make_ring
from ..supervisor import ReplicaSpec, make_supervisor
from .admin import make_admin_app
from .membership import ReplicaSet
from .proxy import Proxy

__all__ = ["build_parser", "main"]

MAX_ADMIN_BODY = 1 << 20  # /add and /rm carry a few names: 1 MiB is plenty

log = logging.getLogger("dslab.balancer")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _balance_factor(text: str) -> float:
    value = float(text)
    if not value > 1:
        raise argparse.ArgumentTypeError(f"the balance factor must be above 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dslab.balancer", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default=_env("HOST", "0.0.0.0"), help="env HOST")
    p.add_argument("--port", type=int, default=int(_env("PORT", "5000")), help="env PORT")
    p.add_argument("-n", "--replicas", type=int, default=int(_env("N", "3")),
                   help="replicas to keep alive (env N)")
    p.add_argument("--hash", choices=sorted(HASH_PAIRS), default=_env("HASH", "seed"),
                   help="hash functions H and Phi (env HASH)")
    p.add_argument("--slots", type=int, default=int(_env("SLOTS", "512")), help="env SLOTS")
    p.add_argument("--vnodes", type=int, default=int(_env("VNODES", "9")),
                   help="virtual servers per replica, K (env VNODES)")
    p.add_argument("--probing", choices=PROBING, default=_env("PROBING", "linear"),
                   help="collision probing (env PROBING)")
    p.add_argument("--algorithm", choices=ALGORITHMS, default=_env("ALGORITHM", "ring"),
                   help="consistent hashing algorithm; --slots, --vnodes and --probing are "
                        "the ring's (env ALGORITHM)")
    p.add_argument("--balance-factor", type=_balance_factor,
                   default=_env("BALANCE_FACTOR", "") or None,
                   help="bounded loads: no replica takes ceil(C x (in flight + 1) / N) or "
                        "more requests at once; off by default (env BALANCE_FACTOR)")
    add_capacity_option(p, "--replica-cpus", "REPLICA_CPUS", "replica")
    add_heartbeat_options(p, interval=0.25, timeout=0.5, misses=2)
    p.add_argument("--request-timeout", type=float,
                   default=float(_env("REQUEST_TIMEOUT", "5")), help="seconds per upstream try")
    add_backend_options(p, "--replica-image", "REPLICA_IMAGE", "dslab-replica:latest")
    add_edge_options(p)
    add_admin_token_options(p)
    return p



async def run(args: argparse.Namespace) -> None:
    ring = make_ring(args.algorithm, args.hash, slots=args.slots, vnodes=args.vnodes,
                     probing=args.probing)
    supervisor = make_supervisor(
        args.backend, ReplicaSpec(module="dslab.replica", image=args.replica_image,
                                  cpus=args.replica_cpus),
        stack=args.stack, address=args.docker_address)
    replicas = ReplicaSet(supervisor, ring, request_timeout=args.request_timeout,
                          **heartbeat_settings(args))
    proxy = Proxy(replicas, balance_factor=args.balance_factor)
    front = Front(proxy.route, make_admin_app(replicas, args.token), max_body=MAX_ADMIN_BODY,
                  limits=edge_limits(args))

    async def start() -> None:
        await replicas.start([f"Server{i}" for i in range(1, args.replicas + 1)])

    def listening(port: int) -> None:
        log.info("balancer on port %d: %d replicas, %s, hash=%s, slots=%d, K=%d, %s probing, "
                 "balance factor %s", port, args.replicas, args.algorithm, args.hash, args.slots,
                 args.vnodes, args.probing, args.balance_factor or "off")

    async def stop() -> None:
        await replicas.close()
        log.info("stopped; every replica removed")

    await serve(front, args.host, args.port, args.ready_fd, start=start, stop=stop,
                listening=listening)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.token = admin_token(args, parser)  # the file's read once, here; never logged
    run_main(run, args)
