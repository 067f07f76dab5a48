"""Start and stop a whole stack from Python (tests, benchmarks, notebooks).

``BalancerProcess`` runs ``python -m dslab.balancer`` as a child process exactly as
``make run-lb`` does, learns its port through the ready pipe (no polling, no sleeps), and on
``stop`` sends SIGTERM and waits, so the balancer removes its replicas itself.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import psutil

__all__ = ["BalancerProcess", "StackError", "wait_until"]

T = TypeVar("T")


class StackError(RuntimeError):
    pass


def wait_until(condition: Callable[[], T | None], timeout: float, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:g}s")
        time.sleep(interval)


def _read_ready_line(fd: int, timeout: float, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StackError(f"{proc.args!r} did not become ready within {timeout:g}s")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 64)
            if not chunk:
                raise StackError(f"{proc.args!r} exited before it was ready "
                                 f"(exit code {proc.wait()})")
            data += chunk
    return int(data.split(b"\n", 1)[0])


class BalancerProcess:
    """A balancer and the replicas it spawns, as child processes: Part 1 by default,
    Part 2 with ``module="dslab.db"``."""

    def __init__(self, module: str = "dslab.balancer", args: Sequence[str] = (), *,
                 port: int = 0, host: str = "127.0.0.1", env: dict[str, str] | None = None,
                 start_timeout: float = 60.0, quiet: bool = True) -> None:
        self.module = module
        self.args = list(args)
        self.requested_port = port
        self.host = host
        self.env = env
        self.start_timeout = start_timeout
        self.quiet = quiet
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> BalancerProcess:
        read_fd, write_fd = os.pipe()
        cmd = [sys.executable, "-m", self.module, "--host", self.host,
               "--port", str(self.requested_port), "--ready-fd", str(write_fd), *self.args]
        if self.quiet:
            cmd += ["--log-level", "WARNING"]
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(write_fd,), stdin=subprocess.DEVNULL,
                                         env={**os.environ, **(self.env or {})})
        finally:
            os.close(write_fd)
        try:
            self.port = _read_ready_line(read_fd, self.start_timeout, self.proc)
        except BaseException:
            self.kill()
            raise
        finally:
            os.close(read_fd)
        return self

    def replica_processes(self) -> dict[str, psutil.Process]:
        """SERVER_ID -> the replica's process, for the replicas alive now."""
        found: dict[str, psutil.Process] = {}
        for child in psutil.Process(self.pid).children():
            try:
                name = child.environ().get("SERVER_ID")
                if name and child.status() != psutil.STATUS_ZOMBIE:
                    found[name] = child
            except psutil.NoSuchProcess:
                continue
        return found

    def replica_ports(self) -> dict[str, int]:
        """SERVER_ID -> the port the replica listens on (loopback, process backend)."""
        ports: dict[str, int] = {}
        for name, proc in self.replica_processes().items():
            try:
                listening = [c.laddr.port for c in proc.net_connections("tcp")
                             if c.status == psutil.CONN_LISTEN]
            except psutil.NoSuchProcess:
                continue
            if listening:
                ports[name] = listening[0]
        return ports

    def worker_processes(self) -> list[psutil.Process]:
        """The Part 1 balancer's workers (``--workers`` > 1): they proxy, the parent keeps the
        replicas."""
        found = []
        for child in psutil.Process(self.pid).children():
            try:
                if "dslab.balancer.worker" in child.cmdline():
                    found.append(child)
            except psutil.Error:
                continue
        return found

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait: returns the exit code. The balancer removes its replicas."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise StackError(f"balancer did not stop within {timeout:g}s; killed") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> BalancerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
