"""The nemesis: faults injected into a running Part 2 stack on a schedule, each recorded with
its start and end, every one undone on exit (Ctrl-C included).

    kill        a shard server SIGKILLed (with its engine: the server's process group)
    pause       a shard server SIGSTOPped, SIGCONTed at the fault's end
    partition   a shard server's port cut off from everyone both ways (iptables), healed later
    lossy       a share of the packets to and from a server's port dropped at random
    shard_loss  every server of one shard SIGKILLed at once
    power_loss  every process of the stack stopped at once and SIGKILLed (no process sees
                another die first), then started again on its state

Faults touch only the stack's own processes and its servers' loopback ports. The stack is a
``Target``: ``ProcessTarget`` for the process backend, ``DockerTarget`` for containers.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import psutil

from ..stack import BalancerProcess, StackError
from .iptables import LoopbackRules

__all__ = ["FAULTS", "DockerTarget", "FaultEvent", "Nemesis", "ProcessTarget", "Step", "Target",
           "run_schedule"]


FAULTS = ("kill", "pause", "partition", "lossy", "shard_loss", "power_loss")


class Target(Protocol):
    """A stack the nemesis can fault: its shard servers by name, on loopback ports."""

    def servers(self) -> dict[str, int]: ...  # name -> the loopback port the balancer uses
    def shard_servers(self, shard: str) -> list[str]: ...
    def kill(self, names: Sequence[str]) -> None: ...  # all at once
    def pause(self, name: str) -> Callable[[], None]: ...  # returns the resume
    def power_off(self) -> None: ...
    def power_on(self) -> None: ...


class _StackTarget:
    """What both backends share: the balancer is a ``BalancerProcess`` on a fixed port (so a
    power loss brings it back where its clients look for it)."""

    def __init__(self, stack: BalancerProcess) -> None:
        if not stack.requested_port:
            raise ValueError("a power loss needs the balancer on a fixed port (port=...)")
        self.stack = stack

    def shard_servers(self, shard: str) -> list[str]:
        servers = httpx.get(f"{self.stack.url}/status", timeout=30).json()["servers"]
        return sorted(name for name, shards in servers.items() if shard in shards)

    def _balancer_tree(self) -> list[psutil.Process]:
        return [psutil.Process(self.stack.pid), *self.stack.descendants()]

    def _reap(self, procs: list[psutil.Process]) -> None:
        psutil.wait_procs(procs, timeout=30)
        if self.stack.proc is not None:
            self.stack.proc.wait()

    def power_on(self) -> None:
        self.stack.start()


class ProcessTarget(_StackTarget):
    """The process backend: a shard server and its engine are one process group."""

    def servers(self) -> dict[str, int]:
        return self.stack.replica_ports()

    def _pid(self, name: str) -> int:
        return self.stack.replica_processes()[name].pid

    def kill(self, names: Sequence[str]) -> None:
        _freeze_then_kill([functools.partial(_signal_group, self._pid(n)) for n in names])

    def pause(self, name: str) -> Callable[[], None]:
        pid = self._pid(name)
        _signal_group(pid, signal.SIGSTOP)
        return lambda: _signal_group(pid, signal.SIGCONT)

    def power_off(self) -> None:
        procs = self._balancer_tree()
        _freeze_then_kill([functools.partial(_signal_each, procs)])
        self._reap(procs)


class DockerTarget(_StackTarget):
    """The Docker backend, the balancer on the host (``--docker-address loopback``): a shard
    server is a container of the stack, its port published on loopback, so a partition is the
    same iptables rule as for a process; a pause stops every process of the container."""

    def __init__(self, stack: BalancerProcess, stack_name: str) -> None:
        super().__init__(stack)
        import docker  # only where an engine answers

        self.client = docker.from_env()
        self.label = f"dslab.stack={stack_name}"

    def _containers(self, running: bool = True) -> dict[str, Any]:
        filters: dict[str, Any] = {"label": self.label}
        if running:
            filters["status"] = "running"
        return {c.labels["dslab.replica"]: c for c in self.client.containers.list(
            all=not running, filters=filters) if "dslab.replica" in c.labels}

    def servers(self) -> dict[str, int]:
        ports = {}
        for name, container in self._containers().items():
            binding = (container.attrs["NetworkSettings"]["Ports"] or {}).get("5000/tcp")
            if binding:
                ports[name] = int(binding[0]["HostPort"])
        return ports

    @staticmethod
    def _procs(container: Any) -> list[psutil.Process]:
        """A container's processes as the host sees them (its init and every descendant)."""
        try:
            init = psutil.Process(container.attrs["State"]["Pid"])
            return [init, *init.children(recursive=True)]
        except (psutil.NoSuchProcess, ValueError):
            return []

    def kill(self, names: Sequence[str]) -> None:
        containers = self._containers()
        chosen = [containers[n] for n in names if n in containers]
        for container in chosen:  # frozen first (SIGSTOP: this host has no cgroup freezer)
            _signal_each(self._procs(container), signal.SIGSTOP)
        for container in chosen:
            container.kill()

    def pause(self, name: str) -> Callable[[], None]:
        """Every process of the container SIGSTOPped (``docker pause`` needs the cgroup
        freezer, which this machine's engine cannot use), SIGCONTed on resume."""
        procs = self._procs(self._containers()[name])
        _signal_each(procs, signal.SIGSTOP)
        return lambda: _signal_each(procs, signal.SIGCONT)

    def power_off(self) -> None:
        procs = self._balancer_tree()
        containers = list(self._containers().values())
        inside = [p for c in containers for p in self._procs(c)]
        _signal_each(procs + inside, signal.SIGSTOP)
        _freeze_then_kill([functools.partial(_signal_each, procs)])
        for container in containers:
            with contextlib.suppress(Exception):  # one already gone is as good as killed
                container.kill()
        self._reap(procs)

@dataclass
class FaultEvent:
    kind: str
    target: str
    start: float
    end: float | None = None  # None: still on
    note: str = ""
    undo: Callable[[], None] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Step:
    """One fault of a schedule: at ``at`` seconds, for ``seconds`` (0: instantaneous).
    ``target``: a server's or a shard's name; None: the first server alive, by name."""

    at: float
    kind: str
    seconds: float = 0.0
    target: str | None = None
    share: float = 0.3  # lossy only

    def __post_init__(self) -> None:
        if self.kind not in FAULTS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(FAULTS)}")
        if self.seconds < 0 or not 0 < self.share <= 1:
            raise ValueError(f"a fault lasts 0 s or more and drops a share in (0, 1]: {self}")


class Nemesis:
    def __init__(self, target: Target, clock: Callable[[], float] = time.monotonic,
                 t0: float | None = None) -> None:
        self.target = target
        self.clock = clock
        self.t0 = clock() if t0 is None else t0
        self.events: list[FaultEvent] = []
        self.rules = LoopbackRules()
        atexit.register(self.undo_all)

    def __enter__(self) -> Nemesis:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.undo_all()
        atexit.unregister(self.undo_all)

    def now(self) -> float:
        return self.clock() - self.t0

    def _event(self, kind: str, target: str, note: str = "",
               undo: Callable[[], None] | None = None) -> FaultEvent:
        event = FaultEvent(kind, target, self.now(), None if undo else self.now(), note, undo)
        self.events.append(event)
        return event

    def end(self, event: FaultEvent) -> None:
        """End a fault that lasts: its undo runs once."""
        undo, event.undo = event.undo, None
        if undo is not None:
            undo()
            event.end = self.now()

    def undo_all(self) -> None:
        for event in reversed(self.events):
            self.end(event)
        self.rules.close()

    def _server(self, name: str | None) -> tuple[str, int]:
        servers = self.target.servers()
        if not servers:
            raise StackError("no shard server runs")
        name = name if name is not None else sorted(servers)[0]
        return name, servers[name]

    # ---- the faults --------------------------------------------------------------------------
    def kill(self, name: str | None = None) -> FaultEvent:
        name, _ = self._server(name)
        self.target.kill([name])
        return self._event("kill", name)

    def pause(self, name: str | None = None) -> FaultEvent:
        name, _ = self._server(name)
        return self._event("pause", name, undo=self.target.pause(name))

    def partition(self, name: str | None = None) -> FaultEvent:
        name, port = self._server(name)
        return self._rules("partition", name, LoopbackRules.cut(port), f"port {port}")

    def lossy(self, name: str | None = None, share: float = 0.3) -> FaultEvent:
        name, port = self._server(name)
        return self._rules("lossy", name, LoopbackRules.lossy(port, share),
                           f"{share:.0%} of packets dropped, port {port}")

    def _rules(self, kind: str, name: str, rules: list[list[str]], note: str) -> FaultEvent:
        for rule in rules:
            self.rules.add(rule)

        def heal() -> None:
            for rule in rules:
                self.rules.delete(rule)

        return self._event(kind, name, note, undo=heal)

    def shard_loss(self, shard: str) -> FaultEvent:
        names = self.target.shard_servers(shard)
        self.target.kill(names)  # all at once: none answers after another died
        return self._event("shard_loss", shard, ", ".join(names))

    def power_loss(self) -> FaultEvent:
        self.target.power_off()
        return self._event("power_loss", "stack", undo=self.target.power_on)

    # ---- a schedule --------------------------------------------------------------------------
    def begin(self, step: Step) -> FaultEvent:
        if step.kind == "shard_loss":
            return self.shard_loss(step.target or "sh1")
        if step.kind == "lossy":
            return self.lossy(step.target, step.share)
        if step.kind == "power_loss":
            return self.power_loss()
        return {"kill": self.kill, "pause": self.pause,
                "partition": self.partition}[step.kind](step.target)


async def run_schedule(nemesis: Nemesis, steps: Sequence[Step]) -> list[FaultEvent]:
    """Each step at its time from the nemesis's t0, ended after its seconds; blocking work
    (signals, iptables, a restart) runs off the event loop, so the clients keep going."""
    async def one(step: Step) -> FaultEvent:
        await asyncio.sleep(max(0.0, step.at - nemesis.now()))
        event = await asyncio.to_thread(nemesis.begin, step)
        if event.undo is not None:
            await asyncio.sleep(max(0.0, step.seconds - (nemesis.now() - event.start)))
            await asyncio.to_thread(nemesis.end, event)
        return event

    return list(await asyncio.gather(*(one(s) for s in steps)))


def _freeze_then_kill(senders: Sequence[Callable[[int], None]]) -> None:
    """SIGSTOP through every sender, then SIGKILL: all frozen first, so none outlives another."""
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for send in senders:
            send(sig)


def _signal_each(procs: Sequence[psutil.Process], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)


def _signal_group(pid: int, sig: int) -> None:
    """A server and what it started (its engine) are one process group (its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)

