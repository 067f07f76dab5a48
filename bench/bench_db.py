"""Benchmark: the Part 2 balancer against straight access to its engines, in one run.

The seed's configuration (4 shards, 3 replicas, 6 servers), ``--concurrency`` (64) requests in
flight, on two fresh stacks:

  (a) ``--rows`` (10 000) single-row POST /write, then   (c) ``--reads`` (10 000) POST /read of
      ``--span`` (10) ids, on the rows of (a), answered from the shard servers' row caches;
  (b) ``--rows`` rows in POST /write of ``--batch`` (100) rows, then (d) the reads of (c) on
      them, with the row cache off (``ROW_CACHE_ROWS=0``): every read asks an engine.

After each stack's balancer runs, every acknowledged row is read back (a missing one stops the
benchmark), and the same logical work is done directly against the shard servers' own engines
with PyMongo's async client, journaled: one ``insert_one`` per row on each replica of its shard
(a), one ``insert_many`` per batch and shard on each replica (b), one ``find`` per shard a range
touches (c). The ratios say what the balancer, the shard servers and HTTP cost (or save: group
commit batches single-row writes that the direct path cannot) on top of the engines.
``--profile`` also samples the balancer, the metadata engine, one shard server and its engine
with py-spy during (a), and prints where each spends its time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient
from pymongo.write_concern import WriteConcern
from sampling import Sampler

from dslab.db.seed import row, seed_init, shard_of
from dslab.lab.cpu import CpuMeter
from dslab.shard.store import RANGE_INDEX, document
from dslab.stack import BalancerProcess


async def run_all(jobs: list[Any], concurrency: int, work: Any) -> tuple[float, list[float]]:
    """Run ``work(job)`` for every job with ``concurrency`` workers: (seconds, latencies)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            job = queue.get_nowait()
            t = time.perf_counter()
            await work(job)
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def engine_uris(db: BalancerProcess) -> dict[str, str]:
    """Shard server name -> the URI of its own engine (a child process of the server)."""
    uris = {}
    for name, proc in db.replica_processes().items():
        for child in proc.children():
            match = re.search(r"--port (\d+)", " ".join(child.cmdline()))
            if match:
                uris[name] = f"mongodb://127.0.0.1:{match.group(1)}/?directConnection=true"
    return uris


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, seconds: float, count: int, latencies: list[float], unit: str = "rows") -> float:
    rate = count / seconds
    print(f"{name:28s} {rate:9.0f} {unit}/s   p50 {pct(latencies, .5):7.2f} ms   "
          f"p99 {pct(latencies, .99):7.2f} ms", flush=True)
    return rate


class Engines:
    """PyMongo's async client on every shard server's own engine, journaled, with the shard
    servers' layout (rows keyed by Stud_id, a range index) and client options: the direct path
    to compare the balancer with."""

    def __init__(self, db: BalancerProcess, placement: dict[str, list[str]], name: str) -> None:
        self.clients = {n: AsyncMongoClient(uri, retryWrites=False)
                        for n, uri in engine_uris(db).items()}
        self.dbs = {n: c[name].with_options(write_concern=WriteConcern(w=1, j=True))
                    for n, c in self.clients.items()}
        self.holders = {shard: [n for n, s in placement.items() if shard in s] for shard in SHARDS}

    async def prepare(self) -> None:
        for d in self.dbs.values():
            for shard in SHARDS:
                await d[shard].create_index(RANGE_INDEX)

    async def insert_one(self, stud_id: int) -> None:
        shard = shard_of(stud_id)
        await asyncio.gather(*(self.dbs[n][shard].insert_one(document(row(stud_id)))
                               for n in self.holders[shard]))

    async def insert_many(self, batch: list[int]) -> None:
        groups: dict[str, list[int]] = {}
        for i in batch:
            groups.setdefault(shard_of(i), []).append(i)
        await asyncio.gather(*(self.dbs[n][shard].insert_many([document(row(i)) for i in ids])
                               for shard, ids in groups.items() for n in self.holders[shard]))

    async def find(self, low: int, high: int, rng: random.Random) -> None:
        for shard in sorted({shard_of(low), shard_of(high)}):
            name = rng.choice(self.holders[shard])
            await self.dbs[name][shard].find({"Stud_id": {"$gte": low, "$lte": high}},
                                             {"_id": 0}).to_list()

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()


SHARDS = ("sh1", "sh2", "sh3", "sh4")


GROUPS = {"server": "shard servers", "engine": "shard engines", "client": "client (this script)"}


def report_cpu(meter: CpuMeter) -> None:
    """Where the CPU went since the meter started, per group of processes, in % of one core."""
    usage = meter.usage()
    shares = usage.groupby(usage.role.map(lambda r: GROUPS.get(r, r))).cores.sum()
    print("          CPU: " + ", ".join(f"{g} {100 * c:.0f}%" for g, c in
                                      shares.sort_values(ascending=False).items())
          + f" of one core (total {100 * shares.sum():.0f}%)", flush=True)


async def report_batches(http: aiohttp.ClientSession) -> None:
    """How many single-row writes group commit put in one batch, from the balancer's metrics."""
    async with http.get("/metrics") as r:
        text = await r.text()
    totals = {family.name: sum(sample.value for sample in family.samples
                               if sample.name.endswith("_total"))
              for family in text_string_to_metric_families(text)}
    rows, batches = totals["dslab_db_rows_written"], totals["dslab_db_batches"]
    print(f"          group commit: {batches:.0f} batches, {rows / batches:.1f} rows per batch",
          flush=True)


@contextlib.contextmanager
def sampled(db: BalancerProcess, profile: bool, tmp: str) -> Iterator[Sampler | None]:
    """With ``profile``: py-spy on the balancer, the metadata engine, one shard server and its
    engine, for the first seconds of the phase (long enough to see, short enough to end before
    it). Without: nothing."""
    if not profile:
        yield None
        return
    balancer = psutil.Process(db.pid)
    name, server = sorted(db.replica_processes().items())[0]
    pids = {"balancer": db.pid, f"shard server {name}": server.pid,
            "its engine": server.children()[0].pid}
    for child in balancer.children():  # the balancer's own engine, beside its shard servers
        if "secantusd" in " ".join(child.cmdline()):
            pids["metadata engine"] = child.pid
    with Sampler(pids, 5, Path(tmp)) as sampler:
        yield sampler


async def all_ids(http: aiohttp.ClientSession) -> list[int]:
    async with http.post("/read", json={"Stud_id": {"low": 0, "high": 16383}}) as r:
        assert r.status == 200, await r.text()
        return [d["Stud_id"] for d in (await r.json())["data"]]


async def through_balancer(tmp: str, phase: str, ids: list[int], batch: int,
                           reads: list[int], args: argparse.Namespace,
                           rng: random.Random, row_cache: bool) -> dict[str, float]:
    """One fresh stack: the writes, then the reads, through the balancer, then the same
    work straight against its engines. Returns {label: rate}."""
    rates: dict[str, float] = {}
    env = None if row_cache else {**os.environ, "ROW_CACHE_ROWS": "0"}
    db = BalancerProcess("dslab.db", args=["--state-dir", f"{tmp}/{phase}"], env=env).start()
    try:
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(db.url, connector=connector) as http:
            async with http.post("/init", json=seed_init()) as r:
                assert r.status == 200, await r.text()
            batches = [ids[k:k + batch] for k in range(0, len(ids), batch)]

            async def write(chunk: list[int]) -> None:
                async with http.post("/write", json={"data": [row(i) for i in chunk]}) as r:
                    assert r.status == 200, await r.text()

            async def read(low: int) -> None:
                body = {"Stud_id": {"low": low, "high": low + args.span - 1}}
                async with http.post("/read", json=body) as r:
                    assert r.status == 200, await r.text()

            what = "single-row" if batch == 1 else f"{batch}-row"
            cpu = CpuMeter(db)
            with sampled(db, args.profile and batch == 1, tmp) as sampler:
                secs, lat = await run_all(batches, args.concurrency, write)
            rates[f"write {what}"] = report(f"balancer  {what} POST /write", secs, len(ids), lat)
            report_cpu(cpu)
            if batch == 1:
                await report_batches(http)
            if sampler is not None:
                sampler.print_top()
            cpu = CpuMeter(db)
            secs, lat = await run_all(reads, args.concurrency, read)
            source = "row cache" if row_cache else "engines"
            rates[f"read {source}"] = report(f"balancer  POST /read, {source}", secs,
                                             len(reads), lat, "reads")
            report_cpu(cpu)
            held = await all_ids(http)
            lost = sorted(set(ids) - set(held))
            assert not lost, f"{len(lost)} acknowledged rows missing, e.g. {lost[:5]}"
            async with http.get("/status") as r:
                placement = (await r.json())["servers"]

        engines = Engines(db, placement, "bench")
        await engines.prepare()
        if batch == 1:
            secs, lat = await run_all(ids, args.concurrency, engines.insert_one)
            label = "direct    insert_one x3 (j)"
        else:
            secs, lat = await run_all(batches, args.concurrency, engines.insert_many)
            label = f"direct    insert_many of {batch} x3 (j)"
        rates[f"direct write {what}"] = report(label, secs, len(ids), lat)
        secs, lat = await run_all(reads, args.concurrency,
                                  lambda low: engines.find(low, low + args.span - 1, rng))
        rates[f"direct read {source}"] = report(f"direct    find ({args.span} ids)", secs,
                                                len(reads), lat, "reads")
        await engines.close()
    finally:
        db.stop()
    return rates


async def main_async(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    print(f"{os.cpu_count()} cores; seed configuration (4 shards x 3 replicas, 6 servers); "
          f"{args.concurrency} requests in flight; {args.rows} rows per write phase; "
          f"{args.reads} reads of {args.span} ids; every acknowledged row read back", flush=True)
    reads = [rng.randrange(16384 - args.span) for _ in range(args.reads)]
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-db-") as tmp:
        print("\n(a) single-row writes, then (c) reads from the row caches", flush=True)
        rates |= await through_balancer(tmp, "single", rng.sample(range(16384), args.rows), 1,
                                        reads, args, rng, row_cache=True)
        print(f"\n(b) {args.batch}-row writes, then (d) reads with the row cache off", flush=True)
        rates |= await through_balancer(tmp, "batched", rng.sample(range(16384), args.rows),
                                        args.batch, reads, args, rng, row_cache=False)
    batch = f"{args.batch}-row"

    def ratio(what: str) -> str:
        return f"{rates[what] / rates[f'direct {what}']:.2f}"
    print(f"\nbalancer/direct:  single-row writes {ratio('write single-row')}"
          f"  {batch} writes {ratio(f'write {batch}')}"
          f"  reads {ratio('read row cache')} (row cache), {ratio('read engines')} (engines)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--reads", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=100, help="rows per POST /write in (b)")
    ap.add_argument("--span", type=int, default=10, help="ids per read range")
    ap.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true",
                    help="sample the parts with py-spy during (a); print where their time goes")
    args = ap.parse_args()
    if args.rows > 16384:
        sys.exit("--rows: the seed's four shards hold 16384 ids")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
