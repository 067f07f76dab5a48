"""One A-5 run: a Part 2 stack, the client workload, a nemesis schedule at the same time, the
rows read back and checked; then, optionally, a power loss and the rows checked again.
Tests and the A-5 notebook both call ``run_faults``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..common.aio import run_sync
from ..db.seed import seed_init
from ..stack import BalancerProcess
from .checks import Report, check
from .history import History
from .nemesis import DockerTarget, FaultEvent, Nemesis, ProcessTarget, Step, Target, run_schedule
from .workload import Workload, read_back

__all__ = ["FaultRun", "fault_stack", "revival_seconds", "run_against", "run_faults",
           "target_for"]


@dataclass
class FaultRun:
    read_consistency: str
    seconds: float
    history: History
    events: list[FaultEvent]
    held: dict[int, int]
    report: Report
    after_power_loss: Report | None = None
    held_after_power_loss: dict[int, int] = field(default_factory=dict)
    revival: dict[str, tuple[int, float]] = field(default_factory=dict)  # phase: (count, sum s)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def fault_stack(read_consistency: str = "linearizable", *args: str,
                config: dict[str, Any] | None = None,
                backend: str = "process") -> Iterator[BalancerProcess]:
    """A configured Part 2 stack on a fixed loopback port (a power loss brings it back there),
    its state in a temporary folder. ``backend="docker"``: shard servers as containers of a
    stack of its own, every container, network and volume of it removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="dslab-a5-") as state:
        extra: list[str] = []
        if backend == "docker":
            extra = ["--backend", "docker", "--docker-address", "loopback",
                     "--stack", f"dslab-a5-{os.getpid()}"]
        stack = BalancerProcess("dslab.db", ["--state-dir", state, "--read-consistency",
                                             read_consistency, *extra, *args],
                                port=_free_port())
        try:
            stack.start()
            httpx.post(f"{stack.url}/init", json=config or seed_init(),
                       timeout=300).raise_for_status()
            yield stack
        finally:
            stack.stop()
            if backend == "docker":
                _remove_docker_stack(extra[-1])


def _remove_docker_stack(name: str) -> None:
    from ..supervisor.docker import docker_client, remove_stack

    remove_stack(name)
    for volume in docker_client().volumes.list(filters={"label": f"dslab.stack={name}"}):
        volume.remove(force=True)


def target_for(stack: BalancerProcess) -> Target:
    """The nemesis's view of ``stack``, by the backend it was started with."""
    args = stack.args
    if "--backend" in args and args[args.index("--backend") + 1] == "docker":
        return DockerTarget(stack, args[args.index("--stack") + 1])
    return ProcessTarget(stack)


def revival_seconds(url: str) -> dict[str, tuple[int, float]]:
    """From /metrics: per phase of the shard revivals, (how many, seconds in all)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "dslab_db_shard_revival_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith(("_count", "_sum")):
                totals = found.setdefault(sample.labels["phase"], [0, 0.0])
                totals[sample.name.endswith("_sum")] = sample.value
    return {phase: (int(count), total) for phase, (count, total) in found.items()}


async def _run(url: str, target: Target, steps: Sequence[Step], seconds: float,
               workload: Workload, power_loss: bool, read_consistency: str) -> FaultRun:
    history = History()
    before = await read_back(url, workload.ids)
    workload = dataclasses.replace(workload, taken=frozenset(before))
    revived: list[dict[str, tuple[int, float]]] = []

    def keep_revivals(step: Step) -> None:
        """A power loss restarts the balancer and its /metrics: what it counted is kept."""
        if step.kind == "power_loss":
            revived.append(revival_seconds(url))

    with Nemesis(target) as nemesis:
        await asyncio.gather(workload.run(seconds, history, nemesis.t0),
                             run_schedule(nemesis, steps, keep_revivals))
        held = await read_back(url, workload.ids)
        held_at = nemesis.now()
        run = FaultRun(read_consistency, seconds, history, nemesis.events, held,
                       check(history, held, held_at, before=before),
                       revival=_added([*revived, revival_seconds(url)]))
        if power_loss:
            event = await asyncio.to_thread(nemesis.power_loss)
            await asyncio.to_thread(nemesis.end, event)
            run.held_after_power_loss = await read_back(url, workload.ids)
            # checked with the read-back before it: what was seen then must still be there
            run.after_power_loss = check(history, run.held_after_power_loss, nemesis.now(),
                                         before=before, earlier=[(held_at, held)])
    return run


def _added(counts: Sequence[dict[str, tuple[int, float]]]) -> dict[str, tuple[int, float]]:
    total: dict[str, tuple[int, float]] = {}
    for phases in counts:
        for phase, (n, seconds) in phases.items():
            before_n, before_s = total.get(phase, (0, 0.0))
            total[phase] = (before_n + n, before_s + seconds)
    return total


def run_faults(stack: BalancerProcess, steps: Sequence[Step], seconds: float, *,
               power_loss: bool = False, read_consistency: str = "linearizable",
               **workload: Any) -> FaultRun:
    """The workload against ``stack`` for ``seconds`` while the nemesis runs ``steps`` (a
    ``power_loss`` step among them lands with writes in flight); the rows read back and
    checked, then (``power_loss``) the stack killed whole once more, started again on its
    state, and read back and checked again, against the first read-back too."""
    return run_against(stack.url, target_for(stack), steps, seconds, power_loss=power_loss,
                       read_consistency=read_consistency, **workload)


def run_against(url: str, target: Target, steps: Sequence[Step], seconds: float, *,
                power_loss: bool = False, read_consistency: str = "linearizable",
                **workload: Any) -> FaultRun:
    """``run_faults`` for a Part 2 stack at ``url`` faulted through ``target`` (a stack this
    process did not start: on a cluster, ``ClusterTarget``)."""
    return run_sync(_run(url, target, steps, seconds, Workload(url, **workload), power_loss,
                         read_consistency))
