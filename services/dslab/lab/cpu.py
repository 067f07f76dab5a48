"""Where the CPU goes while a stack serves: CPU seconds per part, read from /proc.

A Part 2 stack is a process tree: the balancer, its metadata engine, and per shard server a
server process with its engine as a child (both carry the server's ``SERVER_ID``, and both sit
in the server's CPU group when it is capped: the summary counts them together). ``CpuMeter``
samples every process of the tree and the client (this process) before and after a phase;
``usage`` turns the difference into cores per part, and ``summary`` into the figures a reader
needs to see which part was the bottleneck: the balancer, the clients, or the busiest server
against its quota. A Part 1 balancer with ``--workers`` counts its workers as the balancer.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import psutil

from ..stack import BalancerProcess

__all__ = ["CpuMeter", "summary"]

# role of a part: "balancer", "metadata engine", "client", "server" (a shard server or a Part 1
# replica) or "engine" (a shard server's engine); a server and its engine share its SERVER_ID
Sample = dict[tuple[str, str], float]


class CpuMeter:
    def __init__(self, stack: BalancerProcess) -> None:
        self.stack = stack
        self.started = time.monotonic()
        self.start = self.sample()

    def sample(self) -> Sample:
        """CPU seconds (user + system) so far of every part, keyed by (role, part)."""
        seconds: Sample = {}
        me = psutil.Process()
        parts: list[tuple[psutil.Process, tuple[str, str]]] = [
            (me, ("client", "client")),
            (psutil.Process(self.stack.pid), ("balancer", "balancer"))]
        for proc in self.stack.descendants():
            try:
                name, parent = proc.environ().get("SERVER_ID"), proc.ppid()
                worker = "dslab.balancer.worker" in proc.cmdline()
            except psutil.Error:
                continue
            if worker:  # a Part 1 balancer's worker: the balancer's own CPU
                parts.append((proc, ("balancer", "balancer")))
            elif not name:
                parts.append((proc, ("metadata engine", "metadata engine")))
            else:  # the server itself, or a child of it (its engine): both are the server's
                parts.append((proc, ("server" if parent == self.stack.pid else "engine", name)))
        for proc, key in parts:
            try:
                times = proc.cpu_times()
            except psutil.Error:  # a process that ended since: its time is lost, not wrong
                continue
            seconds[key] = seconds.get(key, 0.0) + times.user + times.system
        return seconds

    def usage(self) -> pd.DataFrame:
        """Cores used by each part since the meter started (or last reset): CPU seconds over
        the wall time between the two samples; columns role, part, cores. Resets the start.
        The kernel counts CPU time in ticks (10 ms), so a phase of a few seconds is exact to
        about 1%; a phase under a second is not."""
        end, now = self.sample(), time.monotonic()
        seconds = now - self.started
        rows = [{"role": role, "part": part, "cores": (spent - self.start.get((role, part), 0.0))
                 / seconds} for (role, part), spent in end.items()]
        self.start, self.started = end, now
        return pd.DataFrame(rows, columns=["role", "part", "cores"])


def summary(usage: pd.DataFrame, cap: float | None) -> dict[str, Any]:
    """One phase's usage as the figures that name its bottleneck: cores of the balancer, the
    metadata engine, the client and all servers; the busiest server's cores, and with a
    ``cap`` per server, the busiest server's share of it."""
    by_role = usage.groupby("role").cores.sum()
    servers = usage[usage.role.isin(["server", "engine"])].groupby("part").cores.sum()
    busiest = float(servers.max()) if len(servers) else 0.0
    return {"balancer": float(by_role.get("balancer", 0.0)),
            "metadata engine": float(by_role.get("metadata engine", 0.0)),
            "client": float(by_role.get("client", 0.0)),
            "servers": float(servers.sum()),
            "busiest server": busiest,
            "busiest of cap": busiest / cap if cap else float("nan")}
