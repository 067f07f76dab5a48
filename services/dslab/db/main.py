"""Run the Part 2 balancer: ``python -m dslab.db --port 5000``.

Its metadata lives in MongoDB: ``--meta-uri`` (env META_URI), or else a local engine it starts
in ``<state dir>/meta``. Shard servers keep their engines' data in ``<state dir>/servers/<name>``.
A restarted balancer finds its configuration and starts the same servers on the same data;
``--reset`` forgets both. SIGINT or SIGTERM stops the balancer and every server it started.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from ..common.auth import add_admin_token_options, admin_token
from ..common.edge import add_edge_options, edge_limits
from ..common.front import Front, serve
from ..common.limits import MAX_BODY
from ..engine import LocalEngine
from ..keeper.cli import (
    add_backend_options,
    add_capacity_option,
    add_heartbeat_options,
    heartbeat_settings,
    run_main,
)
from ..ring import ALGORITHMS, HASH_PAIRS
from ..supervisor import ReplicaSpec, make_supervisor
from .cluster import REPLICATIONS, ShardCluster
from .datapath import READ_CONSISTENCIES
from .http import DataEndpoints, make_app
from .metadata import Metadata

__all__ = ["build_parser", "main"]

log = logging.getLogger("dslab.db")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m dslab.db", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=env("HOST", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(env("PORT", "5000")))
    p.add_argument("--state-dir", default=env("STATE_DIR", ".state/db"),
                   help="metadata engine and shard servers' data (env STATE_DIR)")
    p.add_argument("--meta-uri", default=env("META_URI", ""),
                   help="MongoDB for the metadata (env META_URI); none: a local engine")
    p.add_argument("--meta-timeout", type=float, default=float(env("META_TIMEOUT", "10")),
                   help="seconds to wait for the metadata store before a 503 (env META_TIMEOUT)")
    p.add_argument("--reset", action="store_true", help="forget the configuration and all data")
    p.add_argument("--hash", choices=sorted(HASH_PAIRS), default=env("HASH", "blake2b"),
                   help="hash functions of the per-shard rings (env HASH)")
    p.add_argument("--algorithm", choices=ALGORITHMS, default=env("ALGORITHM", "ring"),
                   help="consistent hashing algorithm of the per-shard rings (env ALGORITHM)")
    p.add_argument("--request-timeout", type=float, default=float(env("REQUEST_TIMEOUT", "30")),
                   help="seconds a shard server may take to answer (env REQUEST_TIMEOUT)")
    p.add_argument("--read-consistency", choices=READ_CONSISTENCIES,
                   default=env("READ_CONSISTENCY", "linearizable"),
                   help="linearizable: a read never overlaps a change of its shard, so it never "
                        "goes back in time; any: any replica at once, faster, and a read may "
                        "see a change the next read does not (env READ_CONSISTENCY)")
    p.add_argument("--replication", choices=REPLICATIONS, default=env("REPLICATION", "all"),
                   help="all: a write goes to every replica of its shard under the shard's "
                        "lock, and is acknowledged once all have it (the assignment's design); "
                        "majority: each shard's primary logs it and acknowledges once a "
                        "majority journaled it, so a slow or lost minority costs nothing "
                        "(env REPLICATION)")
    p.add_argument("--repl-timeout", type=float, default=float(env("REPL_TIMEOUT", "2")),
                   help="seconds an election's message to a shard server may take; also given "
                        "to the shard servers for their messages to each other "
                        "(env REPL_TIMEOUT)")
    add_capacity_option(p, "--server-cpus", "SERVER_CPUS", "shard server (with its engine)")
    add_heartbeat_options(p, interval=0.25, timeout=1.0, misses=3)
    add_backend_options(p, "--shard-image", "SHARD_IMAGE", "dslab-shard:latest")
    add_edge_options(p)
    add_admin_token_options(p)
    return p



async def run(args: argparse.Namespace) -> None:
    state = Path(args.state_dir).resolve()
    servers_dir = state / "servers"
    if args.reset:
        shutil.rmtree(servers_dir, ignore_errors=True)
    engine: LocalEngine | None = None
    meta_uri = args.meta_uri
    if not meta_uri:
        engine = LocalEngine(state / "meta" / "engine")
        meta_uri = await engine.start()
    timeout_ms = int(args.meta_timeout * 1000)  # an unreachable metadata store: a 503 after it
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        meta_uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms, 30000))
    metadata = Metadata(client["dslab_meta"])
    if args.backend == "process":  # engines' data in host folders, one per server
        spec = ReplicaSpec(module="dslab.shard", env={"SHARD_DATA_ROOT": str(servers_dir),
                                                      "LOG_LEVEL": "WARNING",
                                                      "REPL_TIMEOUT": str(args.repl_timeout)},
                           cpus=args.server_cpus)
        data_root: Path | None = servers_dir
    else:  # each container keeps its engine's data in a named volume at /data
        spec = ReplicaSpec(module="dslab.shard", image=args.shard_image, data_path="/data",
                           env={"LOG_LEVEL": "WARNING", "REPL_TIMEOUT": str(args.repl_timeout)},
                           cpus=args.server_cpus)
        data_root = None
    supervisor = make_supervisor(args.backend, spec, stack=args.stack,
                                 address=args.docker_address)
    if args.reset:
        old = await metadata.load()
        for name in old.placement if old else []:
            await supervisor.discard_data(name)
        await metadata.reset()
    cluster = ShardCluster(supervisor, metadata, data_root=data_root, hashes=args.hash,
                           algorithm=args.algorithm,
                           request_timeout=args.request_timeout,
                           read_consistency=args.read_consistency,
                           replication=args.replication, repl_timeout=args.repl_timeout,
                           **heartbeat_settings(args))
    front = Front(DataEndpoints(cluster).route, make_app(cluster, args.token), max_body=MAX_BODY,
                  limits=edge_limits(args))

    def listening(port: int) -> None:
        log.info("database balancer on port %d, metadata at %s, state in %s", port, meta_uri, state)

    async def stop() -> None:
        # No client is served any more. The metadata client goes first (closing it later would
        # wait for an engine that is gone), then the engine's two-second shutdown runs while
        # the shard servers stop. A write still in flight cannot be acknowledged without the
        # metadata: it is undone, never acknowledged.
        await client.close()
        if engine is not None:
            engine.terminate()
        await cluster.close()
        if engine is not None:
            engine.stop()
        log.info("stopped; every shard server removed")

    await serve(front, args.host, args.port, args.ready_fd, start=cluster.start, stop=stop,
                listening=listening)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.token = admin_token(args, parser)  # the file's read once, here; never logged
    run_main(run, args)
