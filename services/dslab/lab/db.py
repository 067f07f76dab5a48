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
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pandas as pd
from tqdm.auto import tqdm

from ..db.placement import servers_of
from ..db.seed import SEED_SCHEMA, row, seed_init
from ..stack import BalancerProcess, wait_until
from .load import run_sync, tour
from .progress import RunProgress

__all__ = [
    "config_a2",
    "config_a3",
    "db_stack",
    "endpoint_tour",
    "kill_and_refill",
    "replica_counts",
    "speed",
    "speed_table",
    "status",
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


@contextlib.contextmanager
def db_stack(config: dict[str, Any] | None = None) -> Iterator[BalancerProcess]:
    """A running Part 2 stack in a temporary state folder, configured with ``config``."""
    with tempfile.TemporaryDirectory(prefix="dslab-db-") as state:
        db = BalancerProcess("dslab.db", args=["--state-dir", state]).start()
        try:
            if config is not None:
                response = httpx.post(f"{db.url}/init", json=config, timeout=120)
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
                async with session.post(path, json=body) as response:
                    await response.read()
                    code = response.status
                end = time.perf_counter()
                rows.append((kind, code, len(body.get("data", [])) if kind == "write" else 1,
                             start - t0, end - t0, 1000 * (end - start)))
                if bar is not None:
                    bar.update()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return pd.DataFrame(rows, columns=["kind", "status", "items", "start", "end", "latency_ms"])


def speed(config: dict[str, Any], *, n_writes: int = 10000, n_reads: int = 10000,
          batch: int = 10, span: int = 10, concurrency: int = 16, seed: int = 0,
          label: str = "", progress: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``n_writes`` rows written (``batch`` per request), then ``n_reads`` reads of ``span``
    ids, on a fresh stack with ``config``: one row per request, and /status as configured."""
    id_space = sum(s["Shard_size"] for s in config["shards"])
    rng = random.Random(seed)
    ids = rng.sample(range(id_space), n_writes)
    writes = [("write", "/write", {"data": [row(i) for i in ids[k:k + batch]]})
              for k in range(0, n_writes, batch)]
    reads = [("read", "/read", {"Stud_id": {"low": (low := rng.randrange(id_space - span)),
                                            "high": low + span - 1}})
             for _ in range(n_reads)]
    with db_stack(config) as db:
        configured = status(db)
        parts = []
        runs = RunProgress(label or "speed", 2)
        for kind, jobs in (("write", writes), ("read", reads)):
            bar = tqdm(total=len(jobs), desc=f"{label} {kind}s".strip(), leave=False) \
                if progress else None
            try:
                part = run_sync(_post_all(db.url, jobs, concurrency, bar))
            finally:
                if bar is not None:
                    bar.close()
            parts.append(part)
            if progress:
                runs.done(int(part["items"].sum()), float(part.end.max() - part.start.min()),
                          f"{kind}s", unit="rows" if kind == "write" else "reads")
    df = pd.concat(parts, ignore_index=True)
    df["config"] = label
    return df, configured


def speed_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (config, repeat, kind): items per second, p50 and p99 latency, failures."""
    rows = []
    for (label, repeat, kind), part in runs.groupby(["config", "repeat", "kind"], sort=False):
        seconds = part.end.max() - part.start.min()
        rows.append({"config": label, "repeat": repeat, "kind": kind,
                     "per_s": part["items"].sum() / seconds,
                     "p50_ms": part.latency_ms.median(), "p99_ms": part.latency_ms.quantile(.99),
                     "failed": int((part.status != 200).sum())})
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
