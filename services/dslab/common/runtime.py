"""Process plumbing shared by every service: event loop, listening, readiness, shutdown.

A service started by a supervisor gets ``--ready-fd N``: once it listens it writes its port
to that pipe, so the supervisor knows it is up without polling or sleeping, even when it
asked for port 0. ``die_with_parent`` makes the kernel signal the service when its parent
dies, so a SIGKILLed balancer cannot leave replicas behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import math
import os
import resource
import signal
import socket
from collections.abc import Awaitable, Callable

__all__ = ["announce_port", "bind_socket", "die_with_parent", "install_uvloop", "raise_fd_limit",
           "serve_forever", "usable_cores"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent exits (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to the hard limit the system allows (each
    connection is a descriptor); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay runnable
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def bind_socket(host: str, port: int, backlog: int = 1024, *, reuse_port: bool = False,
                listen: bool = True) -> socket.socket:
    """``reuse_port``: several processes bind the same port and the kernel spreads new
    connections over those that listen; a socket bound and not listening keeps the port
    reserved without taking any."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(backlog)
    sock.setblocking(False)
    return sock


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, lowered by a CFS quota on its
    cgroup (cgroup v1 or v2), as a container's ``--cpus`` sets."""
    cores = len(os.sched_getaffinity(0))
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return cores


def _cgroup_quota() -> float | None:
    try:
        lines = open("/proc/self/cgroup").read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        candidates: list[tuple[str, str | None]] = []
        if controllers == "":  # v2
            candidates.append((f"/sys/fs/cgroup{path}/cpu.max", None))
        elif "cpu" in controllers.split(","):
            for base in ("/sys/fs/cgroup/cpu" + path, "/sys/fs/cgroup/cpu"):  # host, container
                candidates.append((f"{base}/cpu.cfs_quota_us", f"{base}/cpu.cfs_period_us"))
        for quota_file, period_file in candidates:
            try:
                if period_file is None:
                    quota, period = open(quota_file).read().split()
                else:
                    quota, period = open(quota_file).read().strip(), open(period_file).read().strip()
            except (OSError, ValueError):
                continue
            if quota in ("max", "-1"):
                return None
            return int(quota) / int(period)
    return None


def announce_port(ready_fd: int | None, port: int) -> None:
    """Tell the supervisor (if any) that we listen on ``port``."""
    if ready_fd is None:
        return
    with os.fdopen(ready_fd, "w") as pipe:
        pipe.write(f"{port}\n")


async def serve_forever(
    start: Callable[[], Awaitable[int]],
    stop: Callable[[], Awaitable[None]],
    ready_fd: int | None = None,
) -> None:
    """Run ``start`` (returns the port it listens on), then wait for SIGINT/SIGTERM and ``stop``."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        port = await start()
    except BaseException:
        await stop()  # undo whatever the failed start had begun (replicas spawned, say)
        raise
    announce_port(ready_fd, port)
    await stopping.wait()
    log.info("signal received, stopping")
    await stop()
