"""The embedded default backend: each replica is a local process on a loopback port.

A replica is started as ``python -m <module> --host 127.0.0.1 --port 0 --ready-fd N`` in its
own session (so it and anything it starts, such as a database engine, are one process group
to signal), with its name in ``SERVER_ID`` and ``HOSTNAME`` as a container would have it. It
writes the port it bound to the pipe ``N``: that line is the readiness signal. With a CPU
capacity (``ReplicaSpec.cpus``) each replica runs in a cgroup of its own (``cgroups.py``),
created before it starts and removed after it stopped.

A capped replica starts uncapped and joins its group once it listens, with everything it
started (a shard server's engine): its start-up (imports, an engine's recovery) costs a few
CPU-seconds, which at 0.05 core would be a minute of wall time, six servers at once no
faster. So the start timeout is a hang detector for an uncapped start, whatever the quota,
and the quota applies to everything the replica serves. The quota is lifted again when the
replica is removed, so that its clean shutdown does not wait on it either.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Collection

from .base import Replica, ReplicaSpec, ReplicaSupervisor, SpawnError, UnknownReplica
from .cgroups import CpuGroups, join_group

__all__ = ["ProcessSupervisor"]

log = logging.getLogger(__name__)


class ProcessSupervisor(ReplicaSupervisor):
    def __init__(self, spec: ReplicaSpec, *, host: str = "127.0.0.1",
                 start_timeout: float = 60.0, stop_timeout: float = 5.0) -> None:
        super().__init__(spec)
        self.host = host
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._procs: dict[str, tuple[Replica, subprocess.Popen[bytes]]] = {}
        # One parent group per supervisor (a balancer process); made now, so that a machine
        # where cgroups cannot be written fails at start with a clear error.
        self.cpu_groups = (CpuGroups(spec.cpus, f"dslab-{os.getpid()}-{id(self):x}")
                           if spec.cpus is not None else None)

    async def spawn(self, name: str, *, avoid: Collection[str] = ()) -> Replica:
        if name in self._procs:
            raise SpawnError(f"replica {name!r} already runs")
        procs_file = self.cpu_groups.create(name) if self.cpu_groups is not None else None
        read_fd, write_fd = os.pipe()
        env = {**os.environ, **self.spec.env, "SERVER_ID": name, "HOSTNAME": name}
        cmd = [sys.executable, "-m", self.spec.module, "--host", self.host, "--port", "0",
               "--ready-fd", str(write_fd)]
        try:
            proc = subprocess.Popen(cmd, env=env, pass_fds=(write_fd,), start_new_session=True,
                                    stdin=subprocess.DEVNULL)
        finally:
            os.close(write_fd)
        try:
            port = await self._read_port(read_fd, name, proc)
            if procs_file is not None:
                join_group(proc.pid, procs_file)
        except BaseException:
            self._kill(proc, signal.SIGKILL)
            await asyncio.get_running_loop().run_in_executor(None, proc.wait)
            await self._release_group(name)
            raise
        replica = Replica(name, self.host, port)
        self._procs[name] = (replica, proc)
        log.info("replica %s started: pid %d on %s", name, proc.pid, replica.address)
        return replica

    async def _read_port(self, read_fd: int, name: str, proc: subprocess.Popen[bytes]) -> int:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0))
        try:
            line = await asyncio.wait_for(reader.readline(), self.start_timeout)
        except TimeoutError:
            raise SpawnError(
                f"replica {name!r} (pid {proc.pid}) runs but did not listen within "
                f"{self.start_timeout:g}s of an uncapped start; its log is on this process's "
                "stderr") from None
        finally:
            transport.close()
        if not line.strip().isdigit():
            code = await asyncio.get_running_loop().run_in_executor(None, proc.wait)
            raise SpawnError(f"replica {name!r} exited before listening (exit code {code}); "
                             "its log is on this process's stderr")
        return int(line)

    async def remove(self, name: str) -> None:
        try:
            replica, proc = self._procs.pop(name)
        except KeyError:
            raise UnknownReplica(f"no replica {name!r}") from None
        if self.cpu_groups is not None:
            self.cpu_groups.uncap(name)  # its shutdown does not wait on its quota
        self._kill(proc, signal.SIGTERM)
        self._kill(proc, signal.SIGCONT)  # a stopped (hung) replica must run to see SIGTERM
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, proc.wait, self.stop_timeout)
        except subprocess.TimeoutExpired:
            log.warning("replica %s ignored SIGTERM for %gs: SIGKILL", name, self.stop_timeout)
            self._kill(proc, signal.SIGKILL)
            await loop.run_in_executor(None, proc.wait)
        # Whatever the replica started (an engine) is in its group: leave nothing behind.
        self._kill(proc, signal.SIGKILL)
        await self._release_group(name)
        log.info("replica %s stopped (exit code %s)", name, proc.returncode)

    async def _release_group(self, name: str) -> None:
        if self.cpu_groups is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.cpu_groups.remove, name)

    async def close(self) -> None:
        await super().close()
        if self.cpu_groups is not None:  # waits for killed processes to leave: off the loop
            await asyncio.get_running_loop().run_in_executor(None, self.cpu_groups.close)

    def replicas(self) -> list[Replica]:
        return [replica for replica, _ in self._procs.values()]

    def alive(self, name: str) -> bool:
        entry = self._procs.get(name)
        return entry is not None and entry[1].poll() is None

    def pid(self, name: str) -> int:
        """The replica's process id (for tests and experiments that kill one)."""
        try:
            return self._procs[name][1].pid
        except KeyError:
            raise UnknownReplica(f"no replica {name!r}") from None

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)  # start_new_session: the group id is the pid
        except ProcessLookupError:
            pass
