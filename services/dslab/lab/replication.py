"""Part 2 A-6: ``--replication all`` against ``--replication majority`` under the same load and
the same faults, every fault aimed at one shard's servers (``SHARD``). Each design gets a fresh
stack, the A-5 clients (writers, updaters of registers, readers: ``dslab.faults``) and one
schedule of faults; the checker judges each run's history. Tables, the timeline chart and the
sentences of the notebook are computed here from the runs.

    schedule       the faults one after another, each aimed at a role of the shard's servers
    RoleTarget     the nemesis's target, where "primary", "secondary" and "majority" (the primary
                   and a secondary) name the shard's servers in that role when the fault begins
    compare        one run per design (majority's first: its primary is the server all's faults
                   hit too); after it each shard is read back on its own, and one that does not
                   serve again soon is left unchecked and said so (``check_readable``), rather
                   than failing the run
    windows        the fault windows each run saw: from a fault to the next one
    window_stats   per design and window: acknowledged writes/s, p50/p99/max (ms) of every
                   shard's writes and of the faulted shard's, writes not acknowledged
    next_write     per design and fault: seconds from it to the shard's next acknowledged write
    verdicts       per design: what the checker found
    timeline       per design and second: writes acknowledged, and their p99
    plot_timeline  the figure
    observations   the findings, every number from the runs (``fault_sentences``,
                   ``checker_sentence``, ``skipped_sentence``)
    round_table    a table for a reader

A "write" is an insert of a fresh row or a register's new version (POST /write, PUT /update);
a write belongs to the window it began in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
from matplotlib.figure import Figure

from ..common.aio import run_sync
from ..db.seed import SEED_SHARDS, shard_of
from ..faults.checks import Report, check
from ..faults.history import History, Kind, Op, Outcome
from ..faults.nemesis import FaultEvent, Gone, Nemesis, Step, Target, run_schedule
from ..faults.run import FaultRun, fault_stack, target_for
from ..faults.workload import Workload, read_back
from .faults import DETECTION, FAULT_COLORS, HEARTBEATS
from .progress import RunProgress

__all__ = ["DESIGNS", "FAULTS", "SHARD", "DesignRun", "Fault", "RoleTarget", "anomalies_markdown",
           "can_partition", "check_readable", "checker_sentence", "compare", "describe",
           "fault_sentences", "header", "label_of", "next_write", "observations",
           "plot_timeline", "primary_of", "roles", "round_table", "schedule",
           "skipped_sentence", "timeline", "verdicts", "window_stats", "windows"]

DESIGNS = ("all", "majority")
SHARD = "sh1"  # every fault hits this shard's servers
NO_FAULT = "no fault"
WRITES = (Kind.INSERT, Kind.WRITE)


@dataclass(frozen=True)
class Fault:
    """One fault of the schedule, at scale 1: the nemesis's ``kind`` aimed at a ``role`` of the
    shard's servers, lasting ``lasts`` seconds (0: at once), the next fault ``slot`` seconds
    after it begins (its window: the fault and what follows it)."""

    label: str
    kind: str
    role: str
    lasts: float
    slot: float
    share: float = 0.3  # lossy only
    needs_root: bool = False  # iptables


FAULTS = (
    # a share of its packets dropped: TCP retransmits, so it answers late, not never
    # (a tenth: at 30% its heartbeats' connects failed three times in a row, and it was evicted)
    Fault("secondary slowed", "lossy", "secondary", 4.0, 6.0, share=0.1, needs_root=True),
    # shorter than the heartbeats' detection: it is never evicted
    Fault("secondary paused", "pause", "secondary", 2.5, 6.0),
    # twice the detection: found and replaced, as in A-5
    Fault("primary paused", "pause", "primary", 2 * DETECTION, 12.0),
    Fault("primary partitioned", "partition", "primary", 2 * DETECTION, 12.0, needs_root=True),
    Fault("primary killed", "kill", "primary", 0.0, 8.0),
    # two of the shard's three servers at once, the primary among them
    Fault("majority lost", "kill", "majority", 0.0, 12.0),
)
BASELINE = 8.0  # seconds of no fault before the first, at scale 1
WARMUP = 1.0  # the first second is left out of the no-fault window (connections, elections)
_BY_LABEL = {f.label: f for f in FAULTS}
_BY_STEP = {(f.kind, f.role): f for f in FAULTS}


def can_partition() -> bool:
    """A partition and a lossy link are iptables rules: root and iptables needed."""
    return os.geteuid() == 0 and shutil.which("iptables") is not None


def schedule(labels: Sequence[str] | None = None, scale: float = 1.0,
             root: bool = True) -> tuple[list[Step], float]:
    """(the steps, the run's length): the faults named (default all), in ``FAULTS``' order,
    one after another, each ``slot * scale`` seconds after the last; without ``root`` the
    ones that need iptables are left out."""
    chosen = [f for f in FAULTS if (labels is None or f.label in labels)
              and (root or not f.needs_root)]
    unknown = set(labels or ()) - set(_BY_LABEL)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; known: {list(_BY_LABEL)}")
    steps, at = [], BASELINE * scale
    for f in chosen:
        steps.append(Step(round(at, 3), f.kind, f.lasts * scale, target=f.role, share=f.share))
        at += f.slot * scale
    return steps, round(at, 3)


def label_of(event: FaultEvent) -> str:
    """The schedule's name of a fault event (its kind and the role it was aimed at)."""
    fault = _BY_STEP.get((event.kind, event.target))
    return fault.label if fault else f"{event.kind.replace('_', ' ')} of {event.target}"


# ---- the target: roles resolved when a fault begins ------------------------------------------

_PRIMARY = re.compile(r'^dslab_db_shard_primary\{server="(\w+)",shard="(\w+)"\} 1\.0$', re.M)
_EVICTIONS = re.compile(r"^dslab_evictions_total (\S+)$", re.M)


def evictions_of(url: str) -> int:
    """How many servers the balancer's heartbeats (or failed requests) evicted so far."""
    found = _EVICTIONS.search(httpx.get(f"{url}/metrics", timeout=30).text)
    return int(float(found[1])) if found else 0


def primary_of(url: str, shard: str = SHARD) -> str | None:
    """The shard's primary as the balancer's /metrics name it (``--replication majority``)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return next((m[1] for m in _PRIMARY.finditer(text) if m[2] == shard), None)


def roles(members: Sequence[str], primary: str | None) -> dict[str, list[str]]:
    """The servers each role names among the shard's live ``members``: the primary (when it is
    not one of them, the first by name), a secondary (the first other by name), and a majority
    of three (those two)."""
    ordered = sorted(members)
    if primary not in ordered:
        primary = ordered[0] if ordered else None
    secondary = next((n for n in ordered if n != primary), None)
    return {"primary": [primary] if primary else [],
            "secondary": [secondary] if secondary else [],
            "majority": [n for n in (primary, secondary) if n]}


class RoleTarget:
    """A nemesis target (wrapping the stack's) where a role of ``shard``'s servers is a server
    name: "primary", "secondary" or "majority" (two servers, killed at once). Each role is
    looked up when the nemesis lists the servers, right before a fault: under majority the
    primary is the one /metrics names then; under all (which has none) ``prefer`` while it
    lives (majority's first primary: the same server), else the first by name.

    Asking the balancer (its /status and /metrics) takes a while when it is busy: ``prepare``
    asks it ahead of a fault, and the lookup then uses those answers, with the servers
    alive at the fault (a local look at the processes)."""

    def __init__(self, inner: Target, url: str, design: str, shard: str = SHARD,
                 prefer: str | None = None,
                 primary: Callable[[str, str], str | None] = primary_of) -> None:
        self.inner = inner
        self.url = url
        self.design = design
        self.shard = shard
        self.prefer = prefer
        self._primary = primary
        self.resolved: dict[str, list[str]] = {}
        self._asked: tuple[list[str], str | None] | None = None  # by ``prepare``
        self.resolutions: list[dict[str, list[str]]] = []  # one per fault, in order
        # when each lookup was done (time.monotonic()): right before its fault took effect,
        # which a partition records only once its rules are in
        self.looked_up: list[float] = []

    def prepare(self) -> None:
        """Ask the balancer now for the shard's servers and (majority) its primary; the next
        lookup uses the answers."""
        primary = self._primary(self.url, self.shard) if self.design == "majority" else None
        self._asked = (self.inner.shard_servers(self.shard), primary)

    def servers(self) -> dict[str, int]:
        if self._asked is None:
            self.prepare()
        assert self._asked is not None
        (shard_servers, primary), self._asked = self._asked, None
        live = self.inner.servers()
        members = [n for n in shard_servers if n in live]
        self.resolved = roles(members, primary or self.prefer)
        self.resolutions.append(self.resolved)
        found = dict(live)
        for role, names in self.resolved.items():
            if names:
                found[role] = live[names[0]]
        self.looked_up.append(time.monotonic())
        return found

    def _names(self, name: str) -> list[str]:
        return self.resolved.get(name, [name]) if name in ("primary", "secondary",
                                                           "majority") else [name]

    def shard_servers(self, shard: str) -> list[str]:
        return self.inner.shard_servers(shard)

    def kill(self, names: Sequence[str]) -> list[psutil.Process]:
        return self.inner.kill([real for name in names for real in self._names(name)])

    def pause(self, name: str) -> tuple[list[psutil.Process], Callable[[], None]]:
        [real] = self._names(name)
        try:
            return self.inner.pause(real)
        except Gone:
            raise Gone(name) from None

    def power_off(self) -> list[psutil.Process]:
        return self.inner.power_off()

    def power_on(self) -> None:
        self.inner.power_on()


# ---- the runs --------------------------------------------------------------------------------

@dataclass
class DesignRun:
    design: str
    run: FaultRun
    primary: str | None  # the shard's primary before the run (all: majority's, by name)
    faulted: list[list[str]] = field(default_factory=list)  # per event by start: servers hit
    unread: list[str] = field(default_factory=list)  # shards not read back after the run
    # per event by start: when the fault took effect, if earlier than the event says (a
    # partition's event starts once its rules are in; the target was looked up before)
    began: list[float] = field(default_factory=list)
    # the balancer's evictions so far: at the start, ahead of each fault, after the run
    evictions: list[int] = field(default_factory=list)

    def onsets(self) -> list[tuple[FaultEvent, float]]:
        """Each event, by start, with when its fault took effect."""
        events = sorted(self.run.events, key=lambda e: e.start)
        return [(e, min(e.start, self.began[k]) if k < len(self.began) else e.start)
                for k, e in enumerate(events)]


READ_BACK_FOR = 15.0  # seconds a shard may take to serve again after the run, or it is unread
AHEAD = 1.0  # seconds before a fault the balancer is asked who holds the shard


async def _read_back(url: str, within: float) -> tuple[dict[int, int], list[str]]:
    """Every row held, shard by shard (each given ``within`` seconds to answer), and the
    shards that did not answer: a shard that never serves again is said so, not waited for."""
    async def one(shard: dict[str, Any]) -> dict[int, int] | None:
        low = int(shard["Stud_id_low"])
        try:
            return await read_back(url, range(low, low + int(shard["Shard_size"])), within)
        except RuntimeError:
            return None
    parts = await asyncio.gather(*(one(s) for s in SEED_SHARDS))
    held = {k: v for part in parts if part is not None for k, v in part.items()}
    return held, [str(s["Shard_id"]) for s, part in zip(SEED_SHARDS, parts) if part is None]


def check_readable(history: History, held: Mapping[int, int], unread: Sequence[str],
                   after: float, before: Mapping[int, int]) -> Report:
    """The checks of a run whose ``unread`` shards could not be read back: the others' rows
    checked against the history, the unread shards' registers only for linearizability (no
    final read); their acknowledged inserts are neither lost nor found."""
    gone = set(unread)
    readable = History(ops=[op for op in history if shard_of(op.key) not in gone])
    report = check(readable, held, after, before=before)
    if gone:
        rest = check(History(ops=[op for op in history if shard_of(op.key) in gone]))
        report.anomalies += rest.anomalies
        report.undecided += rest.undecided
        report.registers_checked += rest.registers_checked
    return report


@dataclass
class _Ran:
    run: FaultRun
    unread: list[str]
    began: list[float]
    evictions: list[int]


async def _run(url: str, target: RoleTarget, steps: Sequence[Step], seconds: float,
               workload: Workload, read_for: float) -> _Ran:
    """The A-5 clients and the nemesis at once (``dslab.faults.run``'s run, without a power
    loss), then every shard read back that serves within ``read_for`` seconds, and checked.
    The balancer's evictions are counted at the start, ahead of each fault and at the end."""
    history = History()
    before = await read_back(url, workload.ids)
    workload = dataclasses.replace(workload, taken=frozenset(before))
    evictions = [await asyncio.to_thread(evictions_of, url)]
    with Nemesis(target) as nemesis:
        async def ask_ahead() -> None:
            for step in sorted(steps, key=lambda s: s.at):
                await asyncio.sleep(max(0.0, step.at - AHEAD - nemesis.now()))
                await asyncio.to_thread(target.prepare)
                evictions.append(await asyncio.to_thread(evictions_of, url))

        await asyncio.gather(workload.run(seconds, history, nemesis.t0),
                             run_schedule(nemesis, steps), ask_ahead())
        evictions.append(await asyncio.to_thread(evictions_of, url))
        held, unread = await _read_back(url, read_for)
        report = check_readable(history, held, unread, nemesis.now(), before)
    began = [t - nemesis.t0 for t in target.looked_up]
    return _Ran(FaultRun("linearizable", seconds, history, nemesis.events, held, report),
                unread, began, evictions)


def compare(designs: Sequence[str] = DESIGNS, labels: Sequence[str] | None = None,
            scale: float = 1.0, backend: str = "process", root: bool | None = None,
            read_for: float = READ_BACK_FOR, **workload: Any) -> dict[str, DesignRun]:
    """Per design, a fresh stack through the same schedule under the A-5 clients. Majority's
    runs first: its shard's primary before the run is the server all's "primary" faults hit."""
    root = can_partition() if root is None else root
    steps, seconds = schedule(labels, scale, root)
    progress = RunProgress("A-6 all against majority", len(designs), unit="operations")
    prefer: str | None = None
    runs: dict[str, DesignRun] = {}
    for design in sorted(designs, key=lambda d: d != "majority"):
        started = time.monotonic()
        with fault_stack("linearizable", *HEARTBEATS, "--replication", design,
                         backend=backend) as stack:
            _warm_up(stack.url)
            primary = primary_of(stack.url) if design == "majority" else prefer
            target = RoleTarget(target_for(stack), stack.url, design, prefer=primary)
            ran = run_sync(_run(stack.url, target, steps, seconds,
                                Workload(stack.url, **workload), read_for))
        run = ran.run
        if design == "majority":
            prefer = primary
        events = sorted(run.events, key=lambda e: e.start)
        faulted = [r.get(e.target, [e.target]) for e, r in zip(events, target.resolutions)]
        runs[design] = DesignRun(design, run, primary, faulted, ran.unread, ran.began,
                                 ran.evictions)
        progress.done(len(run.history), time.monotonic() - started, design)
    return {d: runs[d] for d in designs}


def _warm_up(url: str) -> None:
    """A write to each shard (the last id of each), so that under majority every shard has
    elected its primary before the clients start (the workload leaves ids held alone)."""
    rows = [{"Stud_id": 4096 * k + 4095, "Stud_name": "warm", "Stud_marks": 0} for k in range(4)]
    httpx.post(f"{url}/write", json={"data": rows}, timeout=60).raise_for_status()


# ---- the tables (pure) -----------------------------------------------------------------------

def _writes(ops: Iterable[Op]) -> list[Op]:
    return [op for op in ops if op.kind in WRITES]


def _evicted(counts: Sequence[int]) -> dict[int, int | None]:
    """Window k's evictions (0: the no-fault window, then each fault's), from the counts at
    the start, ahead of each fault and at the end; None where not counted."""
    return defaultdict(lambda: None, {k: counts[k + 1] - counts[k]
                                      for k in range(len(counts) - 1)})


def windows(runs: Mapping[str, DesignRun], warmup: float = WARMUP) -> pd.DataFrame:
    """design, fault, servers, start_s, fault_end_s, end_s, evicted: the no-fault window from
    ``warmup`` to the first fault, then each fault's window from when it took effect to the
    next fault's (or the run's end); fault_end_s is when the fault itself ended (an instant
    one: at once); evicted, how many servers the balancer evicted meanwhile (counted a second
    ahead of each fault: None where not counted)."""
    rows = []
    for design, r in runs.items():
        onsets = r.onsets()
        evicted = _evicted(r.evictions)

        first = onsets[0][1] if onsets else r.run.seconds
        rows.append({"design": design, "fault": NO_FAULT, "servers": "", "start_s": warmup,
                     "fault_end_s": warmup, "end_s": first, "evicted": evicted[0]})
        for k, (e, start) in enumerate(onsets):
            end = onsets[k + 1][1] if k + 1 < len(onsets) else r.run.seconds
            names = r.faulted[k] if k < len(r.faulted) else [e.target]
            rows.append({"design": design, "fault": label_of(e), "servers": ", ".join(names),
                         "start_s": start,
                         "fault_end_s": e.end if e.end is not None else start,
                         "end_s": max(end, start), "evicted": evicted[k + 1]})
    frame = pd.DataFrame(rows, columns=["design", "fault", "servers", "start_s",
                                        "fault_end_s", "end_s", "evicted"])
    frame["evicted"] = frame["evicted"].astype("Int64")
    return frame


def _latency_ms(ops: Sequence[Op]) -> pd.Series:
    return pd.Series([1000 * (op.end - op.start) for op in ops], dtype=float)


def window_stats(runs: Mapping[str, DesignRun], shard: str = SHARD,
                 warmup: float = WARMUP) -> pd.DataFrame:
    """Per design and window (``windows``), of the writes that began in it: acknowledged per
    second, p50, p99 and max latency of the acknowledged ones (ms); the same of ``shard``'s
    writes; and how many were not acknowledged (refused, timed out, or an unknown outcome),
    of every shard and of ``shard``."""
    rows = []
    for w in windows(runs, warmup).to_dict("records"):
        ops = [op for op in _writes(runs[str(w["design"])].run.history)
               if w["start_s"] <= op.start < w["end_s"]]
        ok = [op for op in ops if op.outcome is Outcome.OK]
        mine = [op for op in ok if shard_of(op.key) == shard]
        failed = [op for op in ops if op.outcome is not Outcome.OK]
        seconds = float(w["end_s"]) - float(w["start_s"])
        lat, lat_mine = _latency_ms(ok), _latency_ms(mine)
        rows.append({"design": w["design"], "fault": w["fault"], "servers": w["servers"],
                     "seconds": seconds, "evicted": w["evicted"],
                     "writes_per_s": len(ok) / seconds if seconds > 0 else math.nan,
                     "p50_ms": lat.quantile(0.5), "p99_ms": lat.quantile(0.99),
                     "max_ms": lat.max(),
                     f"{shard}_writes_per_s": len(mine) / seconds if seconds > 0 else math.nan,
                     f"{shard}_p99_ms": lat_mine.quantile(0.99),
                     f"{shard}_max_ms": lat_mine.max(),
                     "not_acknowledged": len(failed),
                     f"{shard}_not_acknowledged": sum(shard_of(op.key) == shard
                                                      for op in failed)})
    return pd.DataFrame(rows)


def next_write(runs: Mapping[str, DesignRun], shard: str = SHARD) -> pd.DataFrame:
    """Per design and fault: seconds from when the fault took effect to the end of ``shard``'s
    first acknowledged write that began once the fault was on (a kill: once the processes were
    seen dead), inf if none was acknowledged for the rest of the run."""
    rows = []
    for design, r in runs.items():
        writes = [op for op in _writes(r.run.history)
                  if op.outcome is Outcome.OK and shard_of(op.key) == shard]
        for e, start in r.onsets():
            on = e.end if e.kind == "kill" and e.end is not None else start
            after = [op.end for op in writes if op.start >= on]
            rows.append({"design": design, "fault": label_of(e),
                         "next_write_s": min(after) - start if after else math.inf})
    return pd.DataFrame(rows, columns=["design", "fault", "next_write_s"])


def verdicts(runs: Mapping[str, DesignRun]) -> pd.DataFrame:
    """Per design, what the checker found: the verdict (linearizable, anomalies, undecided),
    registers checked and found wrong or undecided, acknowledged inserts lost, rows nobody
    wrote, operations and how many were not acknowledged."""
    rows = []
    for design, r in runs.items():
        report = r.run.report
        verdict = ("anomalies" if report.anomalies else "undecided" if report.undecided
                   else "linearizable")
        inserts = [op for op in r.run.history if op.kind is Kind.INSERT]
        unread = [op for op in inserts
                  if op.outcome is Outcome.OK and shard_of(op.key) in r.unread]
        rows.append({"design": design, "verdict": verdict,
                     "registers": report.registers_checked,
                     "not_linearizable": len(report.anomalies),
                     "undecided": len(report.undecided),
                     "inserts_acknowledged": sum(op.outcome is Outcome.OK for op in inserts),
                     "acknowledged_lost": len(report.lost),
                     "unread_shards": ", ".join(r.unread),
                     "acknowledged_unread": len(unread),
                     "phantom_or_altered": len(report.phantoms) + len(report.altered),
                     "operations": len(r.run.history),
                     "not_acknowledged": sum(op.outcome is not Outcome.OK
                                             for op in r.run.history)})
    return pd.DataFrame(rows)


def timeline(runs: Mapping[str, DesignRun], shard: str = SHARD,
             bin_s: float = 1.0) -> pd.DataFrame:
    """design, second, writes_per_s (every shard's writes acknowledged in that bin),
    shard_per_s (``shard``'s), p99_ms (of the writes acknowledged in that bin)."""
    rows = []
    for design, r in runs.items():
        ok = [op for op in _writes(r.run.history) if op.outcome is Outcome.OK]
        bins = int(math.ceil(r.run.seconds / bin_s))
        for b in range(bins):
            inside = [op for op in ok if b * bin_s <= op.end < (b + 1) * bin_s]
            lat = _latency_ms(inside)
            rows.append({"design": design, "second": b * bin_s,
                         "writes_per_s": len(inside) / bin_s,
                         "shard_per_s": sum(shard_of(op.key) == shard for op in inside) / bin_s,
                         "p99_ms": lat.quantile(0.99) if len(lat) else math.nan})
    return pd.DataFrame(rows, columns=["design", "second", "writes_per_s", "shard_per_s",
                                       "p99_ms"])


# ---- the figure ------------------------------------------------------------------------------

DESIGN_COLORS = {"all": "#1f77b4", "majority": "#ff7f0e"}
_LABEL_COLORS = {"secondary slowed": FAULT_COLORS["lossy"], "secondary paused": "#c5b0d5",
                 "primary paused": FAULT_COLORS["pause"],
                 "primary partitioned": FAULT_COLORS["partition"],
                 "primary killed": FAULT_COLORS["kill"],
                 "majority lost": FAULT_COLORS["shard_loss"]}


def plot_timeline(frame: pd.DataFrame, spans: pd.DataFrame, shard: str = SHARD) -> Figure:
    """Three panels over the run: every shard's writes acknowledged per second, ``shard``'s,
    and the p99 of the writes acknowledged each second (log scale); a line per design. Each
    fault is shaded from its start to its end (an instant one: a thin band), from the first
    design's start to the last's end (``spans``: ``windows`` of the runs)."""
    import matplotlib.pyplot as plt

    spans = (spans[spans["fault"] != NO_FAULT].groupby("fault", sort=False)
             .agg(start_s=("start_s", "min"), fault_end_s=("fault_end_s", "max"))
             .reset_index())
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True, layout="constrained")
    panels = [("writes_per_s", "writes acknowledged / s\n(every shard)"),
              ("shard_per_s", f"{shard}'s writes\nacknowledged / s"),
              ("p99_ms", "p99 of the writes\nacknowledged that second (ms)")]
    for ax, (column, ylabel) in zip(axes, panels):
        for design, part in frame.groupby("design", sort=False):
            ax.plot(part["second"], part[column], color=DESIGN_COLORS.get(str(design)),
                    label=str(design), drawstyle="steps-post", linewidth=1.4)
        ax.set_ylabel(ylabel, fontsize=9)
        if column == "p99_ms":
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
    for ax in axes:
        for s in spans.to_dict("records"):
            end = max(float(s["fault_end_s"]), float(s["start_s"]) + 0.3)
            ax.axvspan(float(s["start_s"]), end, color=_LABEL_COLORS.get(str(s["fault"]), "grey"),
                       alpha=0.3, linewidth=0)
    top = axes[0]
    for s in spans.to_dict("records"):
        top.annotate(str(s["fault"]), (float(s["start_s"]), 1.0),
                     xycoords=("data", "axes fraction"), fontsize=8, rotation=30,
                     va="bottom", ha="left")
    axes[0].legend(title="replication", fontsize=8, title_fontsize=8, loc="lower left")
    axes[-1].set_xlabel("second of the run (faults shaded from start to end)")
    axes[-1].set_xlim(0, float(frame["second"].max()) + 1 if len(frame) else 1)
    return fig


# ---- the sentences (pure) --------------------------------------------------------------------

def _x(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "n/a"
    return f"{ratio:.2f}×" if ratio < 1.95 else f"{ratio:.0f}×" if ratio >= 9.5 else f"{ratio:.1f}×"


def _secs(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def _the(label: str) -> str:
    """"secondary paused" -> "the secondary was paused"."""
    who, _, what = label.partition(" ")
    if who in ("primary", "secondary"):
        return f"the {who} was {what}"
    if label == "majority lost":
        return f"two of {SHARD}'s three servers were killed"
    return label


def _compare(a: float, b: float, name_a: str, name_b: str, what: str) -> str:
    """Which of two costs (ratios to a baseline) was larger, in words that follow them."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return ""
    if a > 1.5 * b and a > 2:
        return f"; the fault cost {name_a}'s {what} more"
    if b > 1.5 * a and b > 2:
        return f"; the fault cost {name_b}'s {what} more"
    if a <= 2 and b <= 2:
        return f"; neither's {what} changed much"
    return f"; both {what}s rose about alike"


def _fewer(stats: pd.DataFrame, fault: str, designs: Sequence[str]) -> str:
    """For a fault aimed at several servers: the designs where fewer were running to be hit
    (the lookup found only those), in words; empty when all were."""
    wanted = len(roles(["a", "b", "c"], None).get(_BY_LABEL[fault].role, [])) \
        if fault in _BY_LABEL else 0
    if "servers" not in stats.columns or wanted < 2:
        return ""
    notes = []
    for d in designs:
        hit = [n for n in str(stats.loc[(d, fault), "servers"]).split(", ") if n]
        if len(hit) < wanted:
            notes.append(f"under {d} only {len(hit)} of them, {', '.join(hit) or 'none'}, "
                         f"{'was' if len(hit) == 1 else 'were'} running to be killed")
    return f" ({'; '.join(notes)})" if notes else ""


def fault_sentences(stats: pd.DataFrame, nexts: pd.DataFrame, shard: str = SHARD) -> list[str]:
    """Per fault window: each design's p99 of ``shard``'s acknowledged writes against its own
    no-fault p99 (which paid more, in words that follow the ratios), its writes of ``shard``
    not acknowledged, and the time to the shard's next acknowledged write."""
    p99, failed = f"{shard}_p99_ms", f"{shard}_not_acknowledged"
    s = stats.set_index(["design", "fault"])
    designs = list(dict.fromkeys(stats["design"]))
    faults = [f for f in dict.fromkeys(stats["fault"]) if f != NO_FAULT]
    nx = (nexts.set_index(["design", "fault"])["next_write_s"] if len(nexts)
          else pd.Series(dtype=float))
    out = []
    for fault in faults:
        have = [d for d in designs if (d, fault) in s.index and (d, NO_FAULT) in s.index]
        if not have:
            continue
        ratios = {d: float(s.loc[(d, fault), p99]) / float(s.loc[(d, NO_FAULT), p99])
                  for d in have}
        parts: list[str] = []
        said = False  # "the write p99 was ... its no-fault p99" said once, then only ratios
        for d in have:
            if math.isnan(ratios[d]):
                parts.append(f"none of {shard}'s writes was acknowledged under {d}")
                continue
            ms = f"{_x(ratios[d])} under {d} ({float(s.loc[(d, fault), p99]):,.0f} ms)"
            parts.append(ms if said else f"{shard}'s write p99 was {_x(ratios[d])} its no-fault "
                         f"p99 under {d} ({float(s.loc[(d, fault), p99]):,.0f} ms)")
            said = True
        sentence = f"When {_the(fault)}{_fewer(s, fault, have)}, " + " and ".join(parts)
        if len(have) == 2:
            sentence += _compare(ratios[have[0]], ratios[have[1]], have[0], have[1], "p99")
        out_ = {d: s.loc[(d, fault), "evicted"] for d in have if "evicted" in s.columns}
        out_ = {d: int(n) for d, n in out_.items() if pd.notna(n) and int(n) > 0}
        if out_:
            sentence += "; the balancer evicted " + " and ".join(
                f"{n}{' server' + ('s' if n != 1 else '') if k == 0 else ''} in the window "
                f"under {d}" if k == 0 else f"{n} under {d}"
                for k, (d, n) in enumerate(out_.items()))
        lost = {d: int(s.loc[(d, fault), failed]) for d in have if failed in s.columns}
        if any(lost.values()):
            sentence += "; " + " and ".join(
                f"{n:,} of {shard}'s writes {'was' if n == 1 else 'were'} not acknowledged "
                f"under {d}" for d, n in lost.items() if n)
        waits: list[str] = []
        for d in have:
            if (d, fault) not in nx.index:
                continue
            t = float(nx.loc[(d, fault)])
            after = "" if waits else " after the fault took effect"
            waits.append(f"{_secs(t)}{after} under {d}" if math.isfinite(t)
                         else f"never in the rest of the run under {d}")
        if waits:
            sentence += f". The next acknowledged write of {shard} came " + " and ".join(waits)
        out.append(sentence + ".")
    return out


def _throughput_sentence(stats: pd.DataFrame) -> str:
    base = {str(r["design"]): r for r in stats[stats["fault"] == NO_FAULT].to_dict("records")}
    if not {"all", "majority"} <= set(base):
        return ""
    a, m = float(base["all"]["writes_per_s"]), float(base["majority"]["writes_per_s"])
    ratio = m / a if a else math.inf
    word = ("fewer than" if ratio < 0.9 else "more than" if ratio > 1.1 else "about as many as")
    return (f"Without faults, majority acknowledged {m:,.0f} writes/s, {word} all's {a:,.0f} "
            f"({_x(ratio)}), with a p99 of {float(base['majority']['p99_ms']):,.0f} ms against "
            f"{float(base['all']['p99_ms']):,.0f} ms.")


def _tally_sentence(stats: pd.DataFrame, nexts: pd.DataFrame, shard: str = SHARD,
                    within: float = 2.0, soon: float = 1.0) -> str:
    """In how many fault windows each design acknowledged every write of the shard that began
    in it, with a p99 within ``within``x its no-fault p99 (a write not acknowledged, or none
    acknowledged, and the window does not count), and after how many faults the shard's next
    write was acknowledged within ``soon`` seconds."""
    p99, failed = f"{shard}_p99_ms", f"{shard}_not_acknowledged"
    kept, quick, total = [], [], 0
    for design, part in stats.groupby("design", sort=False):
        base = part.loc[part["fault"] == NO_FAULT, p99]
        faulted = part[part["fault"] != NO_FAULT]
        if base.empty or faulted.empty:
            continue
        total = len(faulted)
        calm = (faulted[p99] / float(base.iloc[0])) <= within
        if failed in faulted.columns:
            calm &= faulted[failed] == 0
        kept.append(f"{int(calm.sum())} under {design}")
        waits = nexts.loc[nexts["design"] == design, "next_write_s"]
        quick.append(f"{int((waits <= soon).sum())} under {design}")
    if not kept:
        return ""
    return (f"Of the {total} fault windows, every write of {shard} begun in the window was "
            f"acknowledged, with a p99 within {within:g}× the no-fault p99, in "
            + " and ".join(kept) + f"; {shard}'s next write was acknowledged within {soon:g} s "
            "of the fault in " + " and ".join(quick) + ".")


def checker_sentence(found: pd.DataFrame) -> str:
    parts = []
    for r in found.to_dict("records"):
        bits = []
        if r["verdict"] == "linearizable":
            bits.append(f"every one of its {r['registers']} registers linearizable")
        else:
            if r["not_linearizable"]:
                bits.append(f"{r['not_linearizable']} of {r['registers']} registers not "
                            "linearizable")
            if r["undecided"]:
                bits.append(f"{r['undecided']} undecided (not passed: the search gave up "
                            "within its budget)")
        lost = int(r["acknowledged_lost"])
        unread = int(r.get("acknowledged_unread", 0))
        bits.append(f"{lost} of the {int(r['inserts_acknowledged']) - unread:,} acknowledged "
                    "inserts it could read back lost")
        if r.get("unread_shards"):
            bits.append(f"{r['unread_shards']}, which did not serve again within "
                        f"{READ_BACK_FOR:g} s of the run's end, not read back: its {unread:,} "
                        "acknowledged inserts are unchecked")
        if r["phantom_or_altered"]:
            bits.append(f"{r['phantom_or_altered']} rows with values nobody wrote")
        na, ops = int(r["not_acknowledged"]), int(r["operations"])
        parts.append(f"under **{r['design']}**, in {ops:,} operations ({na:,} not acknowledged, "
                     f"{na / ops if ops else 0:.1%}), " + ", ".join(bits[:-1])
                     + (" and " if len(bits) > 1 else "") + bits[-1])
    if not parts:
        return ""
    return "The checker found, " + "; ".join(parts) + "."


def skipped_sentence(labels: Sequence[str] | None, root: bool) -> str:
    """Which faults of the schedule were left out for want of root (iptables)."""
    chosen = [f for f in FAULTS if labels is None or f.label in labels]
    left = [f.label for f in chosen if f.needs_root and not root]
    if not left:
        return ""
    return (f"Not run as root (or without iptables): {', '.join(left)} left out, "
            "since they are iptables rules.")


def observations(stats: pd.DataFrame, nexts: pd.DataFrame, found: pd.DataFrame,
                 skipped: str = "", shard: str = SHARD) -> str:
    """The findings as Markdown: the no-fault comparison, then a bullet per fault, then the
    tally over the faults and what the checker found (and what was left out)."""
    faults = fault_sentences(stats, nexts, shard)
    head = " ".join(["**Observations.**", _throughput_sentence(stats)]).strip()
    tail = " ".join(p for p in (_tally_sentence(stats, nexts, shard), checker_sentence(found),
                                skipped) if p)
    return "\n\n".join(p for p in (head, "\n".join(f"- {f}" for f in faults), tail) if p)


def describe(labels: Sequence[str] | None, scale: float, root: bool) -> str:
    """The schedule in words, from the steps themselves."""
    steps, seconds = schedule(labels, scale, root)
    items = []
    for step in steps:
        f = _BY_STEP[(step.kind, step.target or "")]
        how = f" for {step.seconds:g} s" if step.seconds else ""
        extra = f" ({step.share:.0%} of its packets dropped)" if step.kind == "lossy" else ""
        items.append(f"at {step.at:g} s {f.label}{extra}{how}")
    return (f"Each run lasts {seconds:g} s: no fault until {steps[0].at:g} s, then "
            + "; ".join(items) + "." if steps else f"Each run lasts {seconds:g} s, no fault.")


_SHORT = {"not_acknowledged": "not acked", "acknowledged": "acked", "inserts_acknowledged":
          "inserts acked", "acknowledged_lost": "acked inserts lost", "acknowledged_unread":
          "acked inserts unchecked", "unread_shards": "not read back", "phantom_or_altered":
          "rows nobody wrote", "not_linearizable": "not linearizable", "next_write_s":
          "next write (s)", "seconds": "s"}


def header(column: str) -> str:
    """A column's name for a reader: "sh1_p99_ms" -> "sh1 p99 ms", "writes_per_s" ->
    "writes/s", "sh1_not_acknowledged" -> "sh1 not acked"."""
    for long, short in _SHORT.items():
        if column.endswith(long):
            return (column[:-len(long)] + short).replace("_", " ")
    return (column.replace("_per_s", "/s").replace("_ms", " ms").replace("_s", " (s)")
            .replace("_", " "))


def round_table(frame: pd.DataFrame, index: Sequence[str] = ()) -> pd.DataFrame:
    """A table for a reader: rates and milliseconds to whole numbers, seconds to one decimal
    (the next write's to two), an infinite wait as "never", a number of nothing (the p99 of
    no write) as "none", headers in words, ``index`` columns as the index."""
    out = frame.copy()
    for column in out.columns:
        if not pd.api.types.is_float_dtype(out[column]):
            continue
        if column.endswith(("_ms", "_per_s")):
            out[column] = out[column].round(0)
        elif column.endswith("_s") or column == "seconds":
            out[column] = out[column].round(2 if column == "next_write_s" else 1)
    out = out.astype(object).where(~out.isin([np.inf]), "never")
    out = out.where(out.notna() | ~frame.apply(pd.api.types.is_float_dtype).reindex(
        out.columns, fill_value=False).to_numpy()[None, :], "none")
    if index:
        out = out.set_index(list(index))
    return out.rename(columns=header)


def anomalies_markdown(runs: Mapping[str, DesignRun], most: int = 3) -> str:
    """What the checker shows for the first anomalies and undecided registers of each design,
    the operations verbatim; empty when every register was decided and linearizable."""
    parts = []
    for design, r in runs.items():
        for a in r.run.report.anomalies[:most]:
            parts.append(f"**{design}**:\n\n```\n{a.explain()}\n```")
        if r.run.report.undecided:
            keys = ", ".join(str(u.key) for u in r.run.report.undecided)
            parts.append(f"**{design}**: registers {keys} undecided: the search gave up "
                         "within its budget, so they have not passed.")
    return "\n\n".join(parts)
