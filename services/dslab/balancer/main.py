"""Run the Part 1 balancer: ``python -m dslab.balancer --port 5000 -n 3``.

Every option also reads an environment variable (shown in ``--help``), which is how Docker
Compose configures it. SIGINT or SIGTERM stops the balancer, its workers and every replica it
started.

``--workers 1`` is one process that does everything. With more, this process (the primary)
keeps the replicas, their ring and the heartbeats, and W worker processes (``worker.py``)
accept on the port and proxy (``workers.py`` says how they are kept in step).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

from ..common.auth import add_admin_token_options, admin_token
from ..common.edge import add_edge_options, edge_limits
from ..common.front import Front, serve
from ..common.runtime import bind_socket, raise_fd_limit, serve_forever, usable_cores
from ..keeper.bounded import InFlight
from ..keeper.cli import (
    add_backend_options,
    add_capacity_option,
    add_heartbeat_options,
    heartbeat_settings,
    run_main,
)
from ..keeper.metrics import KeeperCollector
from ..ring import ALGORITHMS, HASH_PAIRS, PROBING, make_ring
from ..supervisor import ReplicaSpec, make_supervisor
from . import native
from .admin import make_admin_app
from .channel import Hello
from .membership import ReplicaSet
from .metrics import ProxyMetrics
from .native import NativePlane
from .proxy import Proxy
from .sharedload import create_table
from .workers import WorkerPool

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


def _workers(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least one worker, got {text}")
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
    p.add_argument("--workers", type=_workers,
                   default=_workers(_env("WORKERS", "") or str(usable_cores())),
                   help="processes that accept and proxy requests; 1 is a single process; "
                        "default: the cores this process may use (env WORKERS)")
    p.add_argument("--plane", choices=("auto", "python", "native"),
                   default=_env("PLANE", "auto"),
                   help="what proxies: the native data plane (Rust, --workers threads, this "
                        "process its control plane; the ring algorithm only, no bounded "
                        "loads), or this Python (--workers processes); auto: native where it "
                        "is installed and the options allow (env PLANE)")
    add_capacity_option(p, "--replica-cpus", "REPLICA_CPUS", "replica")
    add_heartbeat_options(p, interval=0.25, timeout=0.5, misses=2)
    p.add_argument("--request-timeout", type=float,
                   default=float(_env("REQUEST_TIMEOUT", "5")), help="seconds per upstream try")
    add_backend_options(p, "--replica-image", "REPLICA_IMAGE", "dslab-replica:latest")
    add_edge_options(p)
    add_admin_token_options(p)
    return p



def _replica_set(args: argparse.Namespace) -> ReplicaSet:
    ring = make_ring(args.algorithm, args.hash, slots=args.slots, vnodes=args.vnodes,
                     probing=args.probing)
    supervisor = make_supervisor(
        args.backend, ReplicaSpec(module="dslab.replica", image=args.replica_image,
                                  cpus=args.replica_cpus),
        stack=args.stack, address=args.docker_address)
    return ReplicaSet(supervisor, ring, request_timeout=args.request_timeout,
                      **heartbeat_settings(args))


def _log_listening(args: argparse.Namespace, port: int) -> None:
    log.info("balancer on port %d: %d replicas, %s, hash=%s, slots=%d, K=%d, %s probing, "
             "balance factor %s, %d worker(s), %s plane", port, args.replicas, args.algorithm,
             args.hash, args.slots, args.vnodes, args.probing, args.balance_factor or "off",
             args.workers, args.plane)


async def run(args: argparse.Namespace) -> None:
    if args.plane == "native":
        await run_native(args)
        return
    if args.workers > 1:
        await run_workers(args)
        return
    replicas = _replica_set(args)
    inflight = InFlight()
    metrics = ProxyMetrics(inflight, [KeeperCollector(replicas.keeper)])
    proxy = Proxy(replicas, inflight, metrics, balance_factor=args.balance_factor)
    front = Front(proxy.route, make_admin_app(replicas, args.token), max_body=MAX_ADMIN_BODY,
                  limits=edge_limits(args))

    async def start() -> None:
        await replicas.start([f"Server{i}" for i in range(1, args.replicas + 1)])

    async def stop() -> None:
        await replicas.close()
        log.info("stopped; every replica removed")

    await serve(front, args.host, args.port, args.ready_fd, start=start, stop=stop,
                listening=lambda port: _log_listening(args, port))


async def run_native(args: argparse.Namespace) -> None:
    """The native data plane on the port, this process its control plane (``native.py``);
    what the plane hands over is served here as with ``--workers 1``."""
    # Every connection is a descriptor, the plane's as the Python plane's (``serve`` raises it
    # there): take what the system allows, before the replicas inherit the limit.
    log.info("open-file limit: %d", raise_fd_limit())
    replicas = _replica_set(args)
    inflight = InFlight()
    metrics = ProxyMetrics(inflight, [KeeperCollector(replicas.keeper)])
    proxy = Proxy(replicas, inflight, metrics)
    front = Front(proxy.route, make_admin_app(replicas, args.token), max_body=MAX_ADMIN_BODY,
                  limits=edge_limits(args))
    planes: list[NativePlane] = []

    async def start() -> int:
        await replicas.start([f"Server{i}" for i in range(1, args.replicas + 1)])
        plane = NativePlane(replicas, front, metrics, host=args.host, port=args.port,
                            threads=args.workers, request_timeout=args.request_timeout,
                            limits=edge_limits(args), exhausted=proxy.exhausted)
        planes.append(plane)
        replicas.on_change = plane.publish
        metrics.count_also(plane)
        _log_listening(args, plane.port)
        return plane.port

    async def stop() -> None:
        for plane in planes:
            plane.stop()
        for conn in list(front.connections):
            conn.close()
        await replicas.close()
        log.info("stopped; every replica removed")

    await serve_forever(start, stop, args.ready_fd)


def _state_dir() -> Path:
    """The workers' metrics files and load table: in memory where the system has a tmpfs."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="dslab-balancer-",
                                 dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))


def _reserve_port(host: str, port: int) -> socket.socket:
    """The port, bound with SO_REUSEPORT and not listening: it stays ours while workers come
    and go, and takes no connection itself. SO_REUSEPORT lets any process of this user bind it
    too, so it is first bound without: a port in use (by another balancer, say) is refused
    here as a single process would be refused it."""
    with bind_socket(host, port, listen=False) as probe:
        port = int(probe.getsockname()[1])
    return bind_socket(host, port, reuse_port=True, listen=False)


async def run_workers(args: argparse.Namespace) -> None:
    """The primary: the replicas, then the port reserved, then the workers on it."""
    replicas = _replica_set(args)
    reserved = _reserve_port(args.host, args.port)
    port = int(reserved.getsockname()[1])
    state_dir = _state_dir()
    create_table(state_dir / "inflight", args.workers)

    def hello(index: int) -> Hello:
        return Hello(index=index, workers=args.workers, host=args.host, port=port,
                     request_timeout=args.request_timeout, balance_factor=args.balance_factor,
                     limits=edge_limits(args), max_body=MAX_ADMIN_BODY, admin_token=args.token,
                     state_dir=state_dir)

    workers = WorkerPool(replicas, hello, args.workers, state_dir=state_dir,
                         log_level=args.log_level)
    replicas.on_change = workers.changed

    async def start() -> int:
        await replicas.start([f"Server{i}" for i in range(1, args.replicas + 1)])
        await workers.start()
        _log_listening(args, port)
        return port

    async def stop() -> None:
        await workers.close()
        await replicas.close()
        reserved.close()
        shutil.rmtree(state_dir, ignore_errors=True)
        log.info("stopped; every worker and replica removed")

    await serve_forever(start, stop, args.ready_fd)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plane != "python":
        why = native.refusal(make_ring(args.algorithm, args.hash), args.balance_factor)
        if why is not None and args.plane == "native":
            parser.error(why)
        args.plane = "python" if why is not None else "native"
    args.token = admin_token(args, parser)  # the file's read once, here; never logged
    run_main(run, args)
