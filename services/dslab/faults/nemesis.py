"""The nemesis: faults injected into a running Part 2 stack on a schedule, each recorded with
its start and end, every one undone on exit (Ctrl-C included).

    kill        a shard server SIGKILLed, with every process it started (its engine)
    pause       a shard server and its engine SIGSTOPped, SIGCONTed at the fault's end
    partition   a shard server's port cut off from everyone both ways (iptables), healed later
    lossy       a share of the packets to and from a server's port dropped at random
    shard_loss  every server of one shard SIGKILLed at once
    power_loss  every process of the stack stopped at once and SIGKILLed (no process sees
                another die first), then started again on its state
    node_kill   a node of a three-engine cluster dies whole (``ClusterTarget``)
    node_cut    a node of that cluster loses its network, reconnected at the fault's end

Faults touch only the stack's own processes and its servers' loopback ports. The stack is a
``Target``: ``ProcessTarget`` for the process backend, ``DockerTarget`` for containers.

A fault is shown to have happened: each event records its effect (``FaultEvent.effect``: the
processes found stopped or killed, the packets a rule dropped). A server that vanished or was
replaced between being listed and being signalled (the balancer replaces dead servers all
the time) is looked up again, or recorded as gone, and the schedule goes on.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx
import psutil

from ..stack import BalancerProcess, StackError
from .iptables import LoopbackRules

__all__ = ["FAULTS", "DockerTarget", "FaultEvent", "Gone", "Nemesis", "NodeTarget", "ProcessTarget", "Step", "Target",
           "run_schedule"]


FAULTS = ("kill", "pause", "partition", "lossy", "shard_loss", "power_loss", "node_kill",
          "node_cut")


# One thread that lives as long as this process, for the processes a nemesis starts again.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dslab-nemesis-spawner")


class Gone(LookupError):
    """The server named is not running (any more): it died or was replaced meanwhile."""


class Target(Protocol):
    """A stack the nemesis can fault: its shard servers by name, on loopback ports."""

    def servers(self) -> dict[str, int]: ...  # name -> the loopback port the balancer uses
    def shard_servers(self, shard: str) -> list[str]: ...
    def kill(self, names: Sequence[str]) -> list[psutil.Process]: ...  # all at once; the killed
    def pause(self, name: str) -> tuple[list[psutil.Process], Callable[[], None]]: ...
    def power_off(self) -> list[psutil.Process]: ...  # the processes killed
    def power_on(self) -> None: ...


@runtime_checkable
class NodeTarget(Protocol):
    """A stack on several machines: whole nodes can be faulted (``ClusterTarget``)."""

    def node_kill(self, node: str) -> dict[str, int]: ...  # the effect seen
    def node_cut(self, node: str) -> tuple[dict[str, int], Callable[[], None]]: ...


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
        # On the spawner thread: the balancer asks to die with its parent (PR_SET_PDEATHSIG),
        # and Linux means the parent *thread*; started from a thread of asyncio's pool, the
        # restarted stack got SIGTERM when the pool's threads ended with the run.
        _SPAWNER.submit(self.stack.start).result()


class ProcessTarget(_StackTarget):
    """The process backend: a shard server, and its engine, which runs in a session of its
    own (so a signal to the server's process group would miss it)."""

    def servers(self) -> dict[str, int]:
        return self.stack.replica_ports()

    def _tree(self, name: str) -> list[psutil.Process]:
        """The server named and every process it started, looked up now."""
        proc = self.stack.replica_processes().get(name)
        if proc is None:
            raise Gone(name)
        try:
            return [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess as exc:
            raise Gone(name) from exc

    def kill(self, names: Sequence[str]) -> list[psutil.Process]:
        procs = []
        for name in names:
            with contextlib.suppress(Gone):
                procs += self._tree(name)
        _freeze_then_kill([functools.partial(_signal_each, procs)])
        return procs

    def pause(self, name: str) -> tuple[list[psutil.Process], Callable[[], None]]:
        procs = self._tree(name)
        _signal_each(procs, signal.SIGSTOP)
        return procs, lambda: _signal_each(procs, signal.SIGCONT)

    def power_off(self) -> list[psutil.Process]:
        procs = self._balancer_tree()
        _freeze_then_kill([functools.partial(_signal_each, procs)])
        self._reap(procs)
        return procs


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

    def kill(self, names: Sequence[str]) -> list[psutil.Process]:
        containers = self._containers()
        chosen = [containers[n] for n in names if n in containers]
        procs = [p for container in chosen for p in self._procs(container)]
        # frozen first (SIGSTOP: this host has no cgroup freezer), so none outlives another
        _signal_each(procs, signal.SIGSTOP)
        for container in chosen:
            with contextlib.suppress(Exception):  # one already gone is as good as killed
                container.kill()
        return procs

    def pause(self, name: str) -> tuple[list[psutil.Process], Callable[[], None]]:
        """Every process of the container SIGSTOPped (``docker pause`` needs the cgroup
        freezer, which this machine's engine cannot use), SIGCONTed on resume."""
        container = self._containers().get(name)
        procs = self._procs(container) if container is not None else []
        if not procs:
            raise Gone(name)
        _signal_each(procs, signal.SIGSTOP)
        return procs, lambda: _signal_each(procs, signal.SIGCONT)

    def power_off(self) -> list[psutil.Process]:
        procs = self._balancer_tree()
        containers = list(self._containers().values())
        inside = [p for c in containers for p in self._procs(c)]
        _signal_each(procs + inside, signal.SIGSTOP)
        _freeze_then_kill([functools.partial(_signal_each, procs)])
        for container in containers:
            with contextlib.suppress(Exception):  # one already gone is as good as killed
                container.kill()
        self._reap(procs)
        return procs + inside

@dataclass
class FaultEvent:
    kind: str
    target: str
    start: float
    end: float | None = None  # None: still on
    note: str = ""
    undo: Callable[[], None] | None = field(default=None, repr=False)
    # What the fault was seen to do: processes found killed or stopped, packets dropped.
    effect: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One fault of a schedule: at ``at`` seconds, for ``seconds`` (0: instantaneous; a power
    loss lasts until the stack is started again). ``target``: a server's or a shard's name;
    None: the first server alive, by name."""

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


SIGNALLED_WITHIN = 5.0  # a signal's effect (stopped, dead) is seen within it, or never
_LOOKUPS = 3  # "the first server alive": looked up again this often if it vanishes meanwhile


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
               undo: Callable[[], None] | None = None, began: float | None = None,
               **effect: int) -> FaultEvent:
        """Record a fault that ``began`` (default: now), its effect seen by now."""
        now = self.now()
        event = FaultEvent(kind, target, now if began is None else began,
                           None if undo else now, note, undo, dict(effect))
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
        if name not in servers:
            raise Gone(name)
        return name, servers[name]

    def _on_a_server(self, kind: str, name: str | None,
                     fault: Callable[[str, int], FaultEvent]) -> FaultEvent:
        """``fault`` on the server named, or on the first alive: looked up again when it
        vanished between the listing and the fault (a server named and gone is recorded so)."""
        for _ in range(_LOOKUPS if name is None else 1):
            try:
                return fault(*self._server(name))
            except Gone as gone:
                missing = str(gone)
        return self._event(kind, missing, "gone before the fault: not running", processes=0)

    # ---- the faults --------------------------------------------------------------------------
    def kill(self, name: str | None = None) -> FaultEvent:
        def kill(server: str, _port: int) -> FaultEvent:
            began = self.now()
            procs = self.target.kill([server])
            if not procs:
                raise Gone(server)
            return self._event("kill", server, began=began, processes=len(procs),
                               killed=_dead(procs))
        return self._on_a_server("kill", name, kill)

    def pause(self, name: str | None = None) -> FaultEvent:
        def pause(server: str, _port: int) -> FaultEvent:
            began = self.now()
            procs, resume = self.target.pause(server)
            return self._event("pause", server, f"{len(procs)} processes", undo=resume,
                               began=began, processes=len(procs), stopped=_stopped(procs))
        return self._on_a_server("pause", name, pause)

    def partition(self, name: str | None = None) -> FaultEvent:
        return self._on_a_server("partition", name, lambda server, port: self._rules(
            "partition", server, LoopbackRules.cut(port), f"port {port}"))

    def lossy(self, name: str | None = None, share: float = 0.3) -> FaultEvent:
        return self._on_a_server("lossy", name, lambda server, port: self._rules(
            "lossy", server, LoopbackRules.lossy(port, share),
            f"{share:.0%} of packets dropped, port {port}"))

    def _rules(self, kind: str, name: str, rules: list[list[str]], note: str) -> FaultEvent:
        rules = [self.rules.add(rule) for rule in rules]

        def heal() -> None:
            event.effect["dropped"] = sum(self.rules.packets(rule) for rule in rules)
            for rule in rules:
                self.rules.delete(rule)

        event = self._event(kind, name, note, undo=heal)
        return event

    def shard_loss(self, shard: str) -> FaultEvent:
        names = self.target.shard_servers(shard)
        began = self.now()
        procs = self.target.kill(names)  # all at once: none answers after another died
        # A server that joined the shard meanwhile (a replacement just refilled) is listed
        # now: killed too, or the shard was never lost.
        for _ in range(_LOOKUPS):
            joined = [n for n in self.target.shard_servers(shard) if n not in names]
            if not joined:
                break
            names += joined
            procs += self.target.kill(joined)
        return self._event("shard_loss", shard, ", ".join(names), began=began,
                           processes=len(procs), killed=_dead(procs))

    def power_loss(self) -> FaultEvent:
        """The stack off; ``end`` starts it again (the event ends when it is up)."""
        began = self.now()
        procs = self.target.power_off()
        return self._event("power_loss", "stack", undo=self.target.power_on, began=began,
                           processes=len(procs), killed=_dead(procs))

    def node_kill(self, node: str) -> FaultEvent:
        """A node of a cluster dies whole (the target must be a ``ClusterTarget``)."""
        began = self.now()
        effect = self._nodes().node_kill(node)
        event = self._event("node_kill", node, began=began)
        event.effect.update(effect)
        return event

    def node_cut(self, node: str) -> FaultEvent:
        """A node of a cluster cut off from the others until the fault ends."""
        began = self.now()
        effect, undo = self._nodes().node_cut(node)
        event = self._event("node_cut", node, undo=undo, began=began)
        event.effect.update(effect)
        return event

    def _nodes(self) -> NodeTarget:
        if not isinstance(self.target, NodeTarget):
            raise TypeError(f"node faults need a stack on a cluster, not a "
                            f"{type(self.target).__name__}")
        return self.target

    # ---- a schedule --------------------------------------------------------------------------
    def begin(self, step: Step) -> FaultEvent:
        if step.kind in ("node_kill", "node_cut"):
            if step.target is None:
                raise ValueError(f"a {step.kind} names its node (target='node1')")
            return (self.node_kill if step.kind == "node_kill" else self.node_cut)(step.target)
        if step.kind == "shard_loss":
            return self.shard_loss(step.target or "sh1")
        if step.kind == "lossy":
            return self.lossy(step.target, step.share)
        if step.kind == "power_loss":
            return self.power_loss()
        return {"kill": self.kill, "pause": self.pause,
                "partition": self.partition}[step.kind](step.target)


async def run_schedule(nemesis: Nemesis, steps: Sequence[Step],
                       before: Callable[[Step], None] | None = None) -> list[FaultEvent]:
    """Each step at its time from the nemesis's t0, ended after its seconds; blocking work
    (signals, iptables, a restart) runs off the event loop, so the clients keep going.
    ``before``: called (off the loop) right before each step begins."""
    async def one(step: Step) -> FaultEvent:
        await asyncio.sleep(max(0.0, step.at - nemesis.now()))
        if before is not None:
            await asyncio.to_thread(before, step)
        event = await asyncio.to_thread(nemesis.begin, step)
        if event.undo is not None:
            await asyncio.sleep(max(0.0, step.seconds - (nemesis.now() - event.start)))
            await asyncio.to_thread(nemesis.end, event)
        return event

    return list(await asyncio.gather(*(one(s) for s in steps)))


def _count_within(procs: Sequence[psutil.Process], state: Callable[[psutil.Process], bool],
                  seconds: float = SIGNALLED_WITHIN) -> int:
    """How many of ``procs`` are in ``state``, polled until all are or ``seconds`` passed (a
    signal is delivered at the process's next scheduling, not at once)."""
    deadline = time.monotonic() + seconds
    while True:
        count = sum(state(p) for p in procs)
        if count == len(procs) or time.monotonic() > deadline:
            return count
        time.sleep(0.01)


def _status(proc: psutil.Process) -> str | None:
    try:
        return str(proc.status())
    except psutil.NoSuchProcess:
        return None


def _stopped(procs: Sequence[psutil.Process]) -> int:
    return _count_within(procs, lambda p: _status(p) in (psutil.STATUS_STOPPED,
                                                         psutil.STATUS_TRACING_STOP))


def _dead(procs: Sequence[psutil.Process]) -> int:
    """Killed: gone, or a zombie its parent has not reaped yet."""
    return _count_within(procs, lambda p: _status(p) in (None, psutil.STATUS_ZOMBIE,
                                                         psutil.STATUS_DEAD))


def _freeze_then_kill(senders: Sequence[Callable[[int], None]]) -> None:
    """SIGSTOP through every sender, then SIGKILL: all frozen first, so none outlives another."""
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for send in senders:
            send(sig)


def _signal_each(procs: Sequence[psutil.Process], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)
