"""One worker of a balancer started with ``--workers W`` > 1: ``python -m
dslab.balancer.worker --channel-fd N``, started by the primary (``workers.py``), never by hand.

It serves everything a single-process balancer serves, on the same port as its siblings
(SO_REUSEPORT), from a copy of the primary's membership (``channel.Membership``): proxied
requests over that ring with its own upstream connections, /rep from the copy, /add and /rm
passed to the primary (which answers only once every worker has the new ring), /metrics summed
over all workers. It listens only once it has a membership, and applies each new one between
two requests (one event loop: a request routes over one ring, old or new, never a mix).

SIGTERM stops it (the primary sends it); SIGINT is left to the primary, which a Ctrl-C
reaches too; when the primary dies, the kernel sends SIGTERM (``die_with_parent``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import signal
import socket
from collections.abc import Sequence

from ..common.errors import ApiError
from ..common.front import Front, start_front
from ..common.runtime import bind_socket, die_with_parent, install_uvloop, raise_fd_limit
from ..keeper.metrics import KeeperCollector
from ..keeper.upstream import UpstreamClosed, UpstreamPool, UpstreamResponse
from ..ring import HashRing
from .admin import make_admin_app
from .channel import Ack, Call, Hello, Listening, Membership, Reply, Suspect, receive, write_now
from .metrics import ProxyMetrics, SharedFolder
from .proxy import Proxy, exhausted_counter
from .sharedload import SharedInFlight

__all__ = ["WorkerReplicas", "main"]

log = logging.getLogger("dslab.balancer.worker")


class WorkerReplicas:
    """The replicas as this worker sees them: what the proxy routes over (``Upstreams``), what
    the admin endpoints read and change (``ReplicaAdmin``: changes go to the primary) and the
    keeper's counts for /metrics (``KeeperCounts``)."""

    def __init__(self, writer: asyncio.StreamWriter, first: Membership, request_timeout: float,
                 inflight: SharedInFlight) -> None:
        self._writer = writer
        self._request_timeout = request_timeout
        self._inflight = inflight
        self._pools: dict[str, UpstreamPool] = {}
        self._calls: dict[int, asyncio.Future[Reply]] = {}
        self._call_ids = itertools.count(1)
        self.ring: HashRing = first.ring
        self.membership = first
        self.apply(first)

    # ---- a new membership -------------------------------------------------------------------
    def apply(self, membership: Membership) -> None:
        if membership.version < self.membership.version:
            return  # cannot happen on one ordered channel; never go back if it did
        for name in [n for n in self._pools if n not in membership.addresses]:
            self._pools.pop(name).close()  # its requests in flight fail over now
        for name, (host, port) in membership.addresses.items():
            pool = self._pools.get(name)
            if pool is None or (pool.host, pool.port) != (host, port):
                if pool is not None:
                    pool.close()
                self._pools[name] = UpstreamPool(host, port, timeout=self._request_timeout,
                                                 coarse_timeout=True)
        self._inflight.slots = membership.slots
        self.ring = membership.ring
        self.membership = membership

    def answered(self, reply: Reply) -> None:
        future = self._calls.pop(reply.call_id, None)
        if future is not None and not future.done():
            future.set_result(reply)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        for future in self._calls.values():
            future.cancel()

    # ---- Upstreams --------------------------------------------------------------------------
    async def fetch(self, name: str, raw_request: bytes) -> UpstreamResponse:
        pool = self._pools.get(name)
        if pool is None:
            raise UpstreamClosed(f"replica {name} left the set")
        return await pool.fetch(raw_request)

    def pool(self, name: str) -> UpstreamPool | None:
        return self._pools.get(name)

    def suspect(self, name: str, exc: Exception | None = None) -> None:
        write_now(self._writer, Suspect(name, str(exc)))

    # ---- ReplicaAdmin -----------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self.membership.addresses)

    async def add(self, n: int, hostnames: Sequence[str]) -> list[str]:
        return await self._call("add", n, hostnames)

    async def remove(self, n: int, hostnames: Sequence[str]) -> tuple[list[str], list[str]]:
        return [], await self._call("rm", n, hostnames)

    async def _call(self, op: str, n: int, hostnames: Sequence[str]) -> list[str]:
        call_id = next(self._call_ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        write_now(self._writer, Call(call_id, op, n, list(hostnames)))
        reply = await future
        if reply.names is None:
            raise ApiError(reply.message, reply.status)
        return reply.names

    # ---- KeeperCounts -----------------------------------------------------------------------
    @property
    def replacements(self) -> int:
        return self.membership.replacements

    @property
    def evictions(self) -> int:
        return self.membership.evictions

    def serving(self) -> list[str]:
        return self.names()

    def evicted(self) -> list[str]:
        return list(self.membership.evicted)

    def placement(self) -> dict[str, str]:
        return dict(self.membership.nodes)


async def run(channel_fd: int) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # the primary stops us
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=channel_fd))
    hello: Hello = await receive(reader)
    first: Membership = await receive(reader)
    inflight = SharedInFlight(hello.state_dir / "inflight", hello.workers, hello.index)
    replicas = WorkerReplicas(writer, first, hello.request_timeout, inflight)
    write_now(writer, Ack(first.version))
    metrics = ProxyMetrics(inflight, [KeeperCollector(replicas)],
                          shared=SharedFolder(hello.state_dir, hello.index, hello.workers))
    proxy = Proxy(replicas, inflight, metrics, balance_factor=hello.balance_factor,
                  exhausted=exhausted_counter(None))  # counted in the shared folder
    front = Front(proxy.route, make_admin_app(replicas, hello.admin_token),
                  max_body=hello.max_body, limits=hello.limits)
    log.info("open-file limit: %d", raise_fd_limit())
    server = await start_front(front, bind_socket(hello.host, hello.port, reuse_port=True))
    write_now(writer, Listening(os.getpid()))

    async def listen() -> None:
        while True:
            try:
                message = await receive(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                log.warning("the primary is gone: stopping")
                stopping.set()
                return
            if isinstance(message, Membership):
                replicas.apply(message)
                write_now(writer, Ack(message.version))
            elif isinstance(message, Reply):
                replicas.answered(message)

    listener = asyncio.ensure_future(listen())
    await stopping.wait()
    server.close()
    for conn in list(front.connections):
        conn.close()
    listener.cancel()
    replicas.close()  # requests in flight fail now and release their count: the table stays


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m dslab.balancer.worker", description=__doc__)
    p.add_argument("--channel-fd", type=int, required=True)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s %(name)s[{os.getpid()}]: %(message)s")
    die_with_parent()
    install_uvloop()
    asyncio.run(run(args.channel_fd))


if __name__ == "__main__":
    main()
