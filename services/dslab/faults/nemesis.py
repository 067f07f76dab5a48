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
``Target``: ``ProcessTarget`` is the process backend's (a ``BalancerProcess``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx
import psutil

from ..stack import BalancerProcess, StackError
from .iptables import LoopbackRules

__all__ = ["FaultEvent", "Nemesis", "ProcessTarget", "Step", "Target", "run_schedule"]


class Target(Protocol):
    def servers(self) -> dict[str, tuple[int, int]]: ...  # name -> (pid, port)
    def shard_servers(self, shard: str) -> list[str]: ...
    def power_off(self) -> None: ...
    def power_on(self) -> None: ...


class ProcessTarget:
    """A Part 2 stack on the process backend; its balancer must listen on a fixed port, so
    that it comes back where its clients look for it."""

    def __init__(self, stack: BalancerProcess) -> None:
        if not stack.requested_port:
            raise ValueError("a power loss needs the balancer on a fixed port (port=...)")
        self.stack = stack

    def servers(self) -> dict[str, tuple[int, int]]:
        ports = self.stack.replica_ports()
        return {name: (proc.pid, ports[name])
                for name, proc in self.stack.replica_processes().items() if name in ports}

    def shard_servers(self, shard: str) -> list[str]:
        servers = httpx.get(f"{self.stack.url}/status", timeout=30).json()["servers"]
        return sorted(name for name, shards in servers.items() if shard in shards)

    def power_off(self) -> None:
        procs = [psutil.Process(self.stack.pid), *self.stack.descendants()]
        for sig in (signal.SIGSTOP, signal.SIGKILL):  # frozen first: none outlives another
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.send_signal(sig)
        psutil.wait_procs(procs, timeout=30)
        if self.stack.proc is not None:
            self.stack.proc.wait()

    def power_on(self) -> None:
        self.stack.start()


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

    def _server(self, name: str | None) -> tuple[str, int, int]:
        servers = self.target.servers()
        if not servers:
            raise StackError("no shard server runs")
        name = name if name is not None else sorted(servers)[0]
        pid, port = servers[name]
        return name, pid, port

    # ---- the faults --------------------------------------------------------------------------
    def kill(self, name: str | None = None) -> FaultEvent:
        name, pid, _ = self._server(name)
        _signal_group(pid, signal.SIGKILL)
        return self._event("kill", name)

    def pause(self, name: str | None = None) -> FaultEvent:
        name, pid, _ = self._server(name)
        _signal_group(pid, signal.SIGSTOP)
        return self._event("pause", name, undo=lambda: _signal_group(pid, signal.SIGCONT))

    def partition(self, name: str | None = None) -> FaultEvent:
        name, _, port = self._server(name)
        return self._rules("partition", name, LoopbackRules.cut(port), f"port {port}")

    def lossy(self, name: str | None = None, share: float = 0.3) -> FaultEvent:
        name, _, port = self._server(name)
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
        servers = self.target.servers()
        pids = [servers[n][0] for n in names if n in servers]
        for pid in pids:
            _signal_group(pid, signal.SIGSTOP)  # all at once: none answers after another died
        for pid in pids:
            _signal_group(pid, signal.SIGKILL)
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


def _signal_group(pid: int, sig: int) -> None:
    """A server and what it started (its engine) are one process group (its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)

