"""A local database engine process, for where no MongoDB server is given.

Services only ever take a MongoDB URI. When they are given none, they start their own engine
with ``LocalEngine``: SecantusDB (``secantusd-py``, from PyPI), which speaks MongoDB's wire
protocol over WiredTiger, on a free loopback port with its own storage folder. The engine is
asked to die with the service that started it, so a SIGKILLed shard server does not leave an
engine behind. On a machine with a real ``mongod`` the same code runs against its URI.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil

__all__ = ["EngineError", "LocalEngine", "engine_executable"]

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    pass


def engine_executable() -> str:
    """``secantusd-py`` beside this Python (the virtualenv's), else on PATH."""
    beside = Path(sys.executable).parent / "secantusd-py"
    if beside.exists():
        return str(beside)
    found = shutil.which("secantusd-py")
    if found is None:
        raise EngineError("secantusd-py not found: `pip install secantusdb` (make does it), "
                          "or give the service a MongoDB URI")
    return found


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    try:
        ctypes.CDLL("libc.so.6").prctl(1, int(signal.SIGKILL), 0, 0, 0)
    except OSError:
        pass


class LocalEngine:
    def __init__(self, storage: str | os.PathLike[str], host: str = "127.0.0.1",
                 start_timeout: float = 30.0, port: int = 0) -> None:
        self.storage = Path(storage)
        self.host = host
        self.start_timeout = start_timeout
        self.fixed_port = port  # 0: a free port, drawn at each start
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.storage.parent / f"{self.storage.name}.log"

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    async def start(self) -> str:
        """Start the engine and return its URI once it accepts connections."""
        self.storage.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # the free port may be taken between our probe and its bind
            self.port = self.fixed_port or _free_port(self.host)
            log_file = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [engine_executable(), "--host", self.host, "--port", str(self.port),
                 "--storage-path", str(self.storage), "--log-level", "WARNING"],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                # Its own session: a Ctrl-C meant for the service must not reach the engine
                # first; the service stops it, or the parent-death signal does.
                start_new_session=True, preexec_fn=_die_with_parent)
            log_file.close()
            if await self._wait_listening():
                log.info("engine on %s (storage %s)", self.uri, self.storage)
                return self.uri
        raise EngineError(f"the engine did not start; see {self.log_path}")

    async def _wait_listening(self) -> bool:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        while loop.time() < deadline:
            if self.proc.poll() is not None:
                return False
            if not self._listens():
                await asyncio.sleep(0.05)  # readiness poll with a deadline
                continue
            return True
        self.stop()
        raise EngineError(f"the engine did not listen within {self.start_timeout:g}s")

    def _listens(self) -> bool:
        """Our engine process listens on our port. Not "the port accepts": two engines started
        at once can draw the same free port, and the one that loses the bind must not take the
        winner's connections for its own (a shard server would then store its rows in another
        server's engine)."""
        assert self.proc is not None
        try:
            procs = [psutil.Process(self.proc.pid)]
            procs += procs[0].children(recursive=True)
            return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                       for p in procs for c in p.net_connections("tcp"))
        except psutil.NoSuchProcess:
            return False

    def terminate(self) -> None:
        """Ask the engine to shut down cleanly, without waiting (``stop`` waits). It takes
        about two seconds however idle it is, so callers start it early."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
