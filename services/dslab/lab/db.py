"""Part 2 experiments (seed section IV), as functions that return DataFrames.

Each timing run starts a fresh database stack (``python -m dslab.db`` with its shard servers
and engines, state in a temporary folder), configures it with /init, writes rows through
POST /write and reads ranges through POST /read with concurrent aiohttp clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import pandas as pd
from tqdm.std import tqdm

from ..db.placement import servers_of
from ..db.seed import SEED_SCHEMA, row, seed_init
from ..stack import BalancerProcess, wait_until
from .cpu import CpuMeter
from .cpu import summary as cpu_summary
from .dbfindings import UNCAPPED, hot_shard
from .load import run_sync, tour
from .progress import RunProgress
from .progress import bar as progress_bar

__all__ = [
    "config_a2",
    "config_a3",
    "cpu_table",
    "db_stack",
    "endpoint_tour",
    "kill_and_refill",
    "plan",
    "read_jobs",
    "replica_counts",
    "Runs",
    "speed",
    "speed_table",
    "status",
    "timed",
    "World",
    "world",
]


def config_a2(replicas: int = 7) -> dict[str, Any]:
    """A-2: the seed's four shards with ``replicas`` copies each, placed at random."""
    body = seed_init(N=replicas, replicas=replicas)
    del body["servers"]
    return body


def config_a3(n: int = 10, shards: int = 6, replicas: int = 8) -> dict[str, Any]:
    """A-3: ``n`` servers, ``shards`` shards of 4096 ids, ``replicas`` copies each, at random."""
    return {"N": n, "schema": SEED_SCHEMA, "replicas": replicas,
            "shards": [{"Stud_id_low": 4096 * k, "Shard_id": f"sh{k + 1}", "Shard_size": 4096}
                       for k in range(shards)]}


def world(cpus: float | None) -> str:
    """The name of a world: servers uncapped (sharing the machine), or each capped."""
    return f"capped at {cpus:g} core per server" if cpus else UNCAPPED


@contextlib.contextmanager
def db_stack(config: dict[str, Any] | None = None,
             server_cpus: float | None = None) -> Iterator[BalancerProcess]:
    """A running Part 2 stack in a temporary state folder, configured with ``config``; with
    ``server_cpus``, every shard server (with its engine) capped at that many cores."""
    with tempfile.TemporaryDirectory(prefix="dslab-db-") as state:
        args = ["--state-dir", state]
        if server_cpus:
            args += ["--server-cpus", str(server_cpus)]
        db = BalancerProcess("dslab.db", args=args).start()
        try:
            if config is not None:
                response = httpx.post(f"{db.url}/init", json=config, timeout=300)
                response.raise_for_status()
            yield db
        finally:
            db.stop()


def status(db: BalancerProcess) -> dict[str, Any]:
    return dict(httpx.get(f"{db.url}/status", timeout=30).json())


async def _post_all(url: str, jobs: list[tuple[str, str, dict[str, Any]]], concurrency: int,
                    bar: tqdm[Any] | None) -> pd.DataFrame:
    pending = iter(jobs)
    rows: list[tuple[Any, ...]] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        t0 = time.perf_counter()

        async def worker() -> None:
            while (job := next(pending, None)) is not None:
                kind, path, body = job
                start = time.perf_counter()
                try:
                    async with session.post(path, json=body) as response:
                        await response.read()
                        code = response.status
                except (TimeoutError, aiohttp.ClientError):
                    code = 0  # no answer: a failed request, counted as one
                end = time.perf_counter()
                rows.append((kind, code, len(body.get("data", [])) if kind == "write" else 1,
                             start - t0, end - t0, 1000 * (end - start)))
                if bar is not None:
                    bar.update()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return pd.DataFrame(rows, columns=["kind", "status", "items", "start", "end", "latency_ms"])


@dataclass
class Runs:
    """Timed runs: one row per request, the cores each part used per phase, and each
    configuration as /status read it back."""

    requests: pd.DataFrame  # world, cpus, config, repeat, kind, status, items, start, end, latency_ms
    cpu: pd.DataFrame  # world, cpus, config, repeat, kind, role, part, cores
    configured: dict[str, dict[str, Any]] = field(default_factory=dict)  # config label -> /status

    @staticmethod
    def concat(runs: Sequence[Runs]) -> Runs:
        configured: dict[str, dict[str, Any]] = {}
        for run in runs:
            configured.update(run.configured)
        return Runs(pd.concat([r.requests for r in runs], ignore_index=True),
                    pd.concat([r.cpu for r in runs], ignore_index=True), configured)


def read_jobs(kind: str, n: int, low: int, high: int, span: int,
              rng: random.Random) -> list[tuple[str, str, dict[str, Any]]]:
    """``n`` POST /read jobs of ``span`` ids each, all within [low, high)."""
    reads = []
    for _ in range(n):
        first = rng.randrange(low, high - span + 1)
        reads.append((kind, "/read", {"Stud_id": {"low": first, "high": first + span - 1}}))
    return reads


def speed(config: dict[str, Any], *, n_writes: int = 10000, n_reads: int = 10000,
          n_hot_reads: int = 0, batch: int = 10, span: int = 10, concurrency: int = 16,
          seed: int = 0, label: str = "", server_cpus: float | None = None, repeat: int = 1,
          progress: RunProgress | None = None) -> Runs:
    """One fresh stack with ``config`` (servers capped at ``server_cpus``): ``n_writes`` rows
    written (``batch`` per request) at random ids, then ``n_reads`` reads of ``span`` ids
    anywhere ("read"), then ``n_hot_reads`` all in the hot shard, the one with the lowest ids
    ("hot read"). Every phase's requests and the cores each part of the stack used meanwhile."""
    id_space = sum(s["Shard_size"] for s in config["shards"])
    hot_id = hot_shard(config)
    hot = next(s for s in config["shards"] if s["Shard_id"] == hot_id)
    rng = random.Random(seed)
    ids = rng.sample(range(id_space), n_writes)
    phases = [("write", [("write", "/write", {"data": [row(i) for i in ids[k:k + batch]]})
                         for k in range(0, n_writes, batch)]),
              ("read", read_jobs("read", n_reads, 0, id_space, span, rng)),
              ("hot read", read_jobs("hot read", n_hot_reads, hot["Stud_id_low"],
                                  hot["Stud_id_low"] + hot["Shard_size"], span, rng))]
    labels: dict[str, Any] = {"world": world(server_cpus), "cpus": server_cpus or float("nan"),
                              "config": label, "repeat": repeat}
    parts, usages = [], []
    with db_stack(config, server_cpus) as db:
        configured = status(db)
        for kind, jobs in phases:
            if not jobs:
                continue
            bar = progress_bar(len(jobs), f"{label} {kind}s".strip()) if progress else None
            meter = CpuMeter(db)
            try:
                part = run_sync(_post_all(db.url, jobs, concurrency, bar))
            finally:
                if bar is not None:
                    bar.close()
            seconds = float(part.end.max() - part.start.min())
            usages.append(meter.usage().assign(kind=kind))
            parts.append(part)
            if progress:
                progress.done(int(part["items"].sum()), seconds,
                              f"{label}, {labels['world']}, {kind}s",
                              unit="rows" if kind == "write" else "reads")
    return Runs(pd.concat(parts, ignore_index=True).assign(**labels),
                pd.concat(usages, ignore_index=True).assign(**labels), {label: configured})


@dataclass(frozen=True)
class World:
    """Where and how much: servers uncapped (``cpus`` None) or capped at ``cpus`` cores each,
    and the sizes of the runs there (a capped world is slower, so it may run fewer)."""

    cpus: float | None = None
    n_writes: int = 10000
    n_reads: int = 10000
    n_hot_reads: int = 0

    @property
    def name(self) -> str:
        return world(self.cpus)

    @property
    def phases(self) -> int:
        return sum(1 for n in (self.n_writes, self.n_reads, self.n_hot_reads) if n)


def plan(worlds: Sequence[World], *, batch: int, span: int, concurrency: int,
         repeats: int) -> str:
    """This run's sizes, as a line for a report's intro."""
    each = "; ".join(f"**{w.name}**: {w.n_writes:,} rows written in batches of {batch}, "
                     f"{w.n_reads:,} reads of {span} ids anywhere, {w.n_hot_reads:,} in the hot "
                     f"shard" for w in worlds)
    return (f"Machine: **{os.cpu_count()} cores**; **{concurrency}** concurrent clients; {each}; "
            f"every configuration timed **{repeats}** times on a fresh stack.")


def timed(configs: Sequence[tuple[str, dict[str, Any]]], worlds: Sequence[World] = (World(),),
          *, repeats: int = 2, progress: bool = True, seed: int = 0, **options: Any) -> Runs:
    """Every configuration (label, /init body) in every world, ``repeats`` times on a fresh
    stack each, interleaved so that a drift of the machine spreads over all of them;
    ``options`` (batch, span, concurrency) as ``speed`` takes them."""
    runs_progress = RunProgress("speed", repeats * len(configs) * sum(w.phases for w in worlds)) \
        if progress else None
    runs = [speed(config, label=label, server_cpus=where.cpus, n_writes=where.n_writes,
                  n_reads=where.n_reads, n_hot_reads=where.n_hot_reads, repeat=repeat,
                  seed=seed + repeat, progress=runs_progress, **options)
            for repeat in range(1, repeats + 1) for where in worlds for label, config in configs]
    return Runs.concat(runs)


def speed_table(requests: pd.DataFrame) -> pd.DataFrame:
    """Per (world, config, repeat, kind): items per second, p50 and p99 latency, failures."""
    rows = []
    keys = ["world", "config", "repeat", "kind"]
    for (world_, label, repeat, kind), part in requests.groupby(keys, sort=False):
        seconds = part.end.max() - part.start.min()
        rows.append({"world": world_, "config": label, "repeat": repeat, "kind": kind,
                     "per_s": part["items"].sum() / seconds,
                     "p50_ms": part.latency_ms.median(), "p99_ms": part.latency_ms.quantile(.99),
                     "failed": int((part.status != 200).sum())})
    return pd.DataFrame(rows)


def cpu_table(cpu: pd.DataFrame) -> pd.DataFrame:
    """Per (world, config, repeat, kind): the cores of the balancer, the metadata engine, the
    client and all servers, and the busiest server's cores (and share of its quota)."""
    rows = []
    keys = ["world", "config", "repeat", "kind"]
    for (world_, label, repeat, kind), part in cpu.groupby(keys, sort=False):
        cap = part.cpus.iloc[0]
        rows.append({"world": world_, "config": label, "repeat": repeat, "kind": kind,
                     "cap": cap, **cpu_summary(part, None if pd.isna(cap) else float(cap))})
    return pd.DataFrame(rows)


def replica_counts(db: BalancerProcess) -> pd.DataFrame:
    """Rows of every shard on every server that holds it, asked from each server directly."""
    ports = db.replica_ports()
    rows = []
    for server, shards in status(db)["servers"].items():
        answer = httpx.request("GET", f"http://127.0.0.1:{ports[server]}/copy",
                               json={"shards": shards}, timeout=60).json()
        for shard in shards:
            rows.append({"server": server, "shard": shard, "rows": len(answer[shard])})
    return pd.DataFrame(rows)


def endpoint_tour(db: BalancerProcess) -> pd.DataFrame:
    """A-4: every endpoint once, errors included, with what it answered."""
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/status", None),
        ("POST", "/init", seed_init()),
        ("GET", "/status", None),
        ("POST", "/write", {"data": [row(2255, 27), row(5000), row(9000), row(13000)]}),
        ("POST", "/write", {"data": [row(2255)]}),
        ("POST", "/write", {"data": [{"Stud_id": "x"}]}),
        ("POST", "/read", {"Stud_id": {"low": 1000, "high": 8889}}),
        ("PUT", "/update", {"Stud_id": 2255, "data": row(2255, 30)}),
        ("PUT", "/update", {"Stud_id": 7, "data": row(7)}),
        ("DELETE", "/del", {"Stud_id": 2255}),
        ("DELETE", "/del", {"Stud_id": 2255}),
        ("POST", "/add", {"n": 2, "new_shards": [{"Stud_id_low": 16384, "Shard_id": "sh5",
                                                  "Shard_size": 4096}],
                          "servers": {"Server7": ["sh3", "sh5"], "Server[5]": ["sh2", "sh5"]}}),
        ("POST", "/add", {"n": 1, "servers": {"A1": ["sh1"], "B1": ["sh2"]}}),
        ("DELETE", "/rm", {"n": 2, "servers": ["Server7"]}),
        ("DELETE", "/rm", {"n": 1, "servers": ["Server4", "Server1"]}),
        ("GET", "/status", None),
    ]
    return tour(db.url, calls)


def kill_and_refill(db: BalancerProcess, victim: str = "Server0", n_rows: int = 2000,
                    seed: int = 0) -> dict[str, Any]:
    """A-4: write rows, SIGKILL ``victim``, wait for its replacement; row counts of every
    replica before and after, and how long the replacement took."""
    ids = random.Random(seed).sample(range(16384), n_rows)
    with httpx.Client(base_url=db.url, timeout=120) as client:
        for k in range(0, n_rows, 100):
            client.post("/write", json={"data": [row(i) for i in ids[k:k + 100]]}).raise_for_status()
    before = replica_counts(db)
    servers_before = status(db)["servers"]
    os.kill(db.replica_processes()[victim].pid, signal.SIGKILL)
    killed = time.monotonic()
    def replaced() -> dict[str, list[str]] | None:
        servers: dict[str, list[str]] = status(db)["servers"]
        return servers if victim not in servers and len(servers) == len(servers_before) else None

    after_servers = wait_until(replaced, 60, what=f"{victim} to be replaced")
    took = time.monotonic() - killed
    newcomer = (set(after_servers) - set(servers_before)).pop()
    after = replica_counts(db)
    return {"victim": victim, "victim_shards": servers_before[victim], "replacement": newcomer,
            "replacement_shards": after_servers[newcomer], "seconds": took,
            "before": before, "after": after,
            "holders_after": {s: servers_of(after_servers, s) for s in servers_before[victim]}}
