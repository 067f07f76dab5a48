"""Benchmark: the seed's A-1 workload through the Part 2 balancer vs straight to the engines.

One run: a database balancer with the seed's configuration (4 shards, 3 replicas, 6 servers).
``--rows`` rows (10 000) are written through POST /write and ``--reads`` single-range reads
(10 000) go through POST /read, by ``--concurrency`` aiohttp clients. Then the same logical
work is done directly against the shard servers' own engines with PyMongo's async client: each
row written, journaled, to the three engines of its shard's replicas; each range read from one
engine. The ratios say what the balancer, the shard servers and HTTP cost on top of the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import tempfile
import time
from typing import Any

import aiohttp
from pymongo import AsyncMongoClient
from pymongo.write_concern import WriteConcern

from dslab.db.seed import row, seed_init, shard_of
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


async def main_async(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    ids = rng.sample(range(16384), args.rows)
    batches = [ids[k:k + args.batch] for k in range(0, len(ids), args.batch)]
    reads = [rng.randrange(16384 - args.span) for _ in range(args.reads)]

    with tempfile.TemporaryDirectory(prefix="bench-db-") as tmp:
        db = BalancerProcess("dslab.db", args=["--state-dir", tmp]).start()
        try:
            async with aiohttp.ClientSession(db.url) as http:
                async with http.post("/init", json=seed_init()) as r:
                    assert r.status == 200, await r.text()
                print(f"{os.cpu_count()} cores; seed configuration (4 shards x 3 replicas, 6 "
                      f"servers); {args.concurrency} concurrent clients; {args.rows} rows in "
                      f"batches of {args.batch}; {args.reads} reads of {args.span} ids", flush=True)

                async def write(batch: list[int]) -> None:
                    async with http.post("/write", json={"data": [row(i) for i in batch]}) as r:
                        assert r.status == 200, await r.text()

                async def read(low: int) -> None:
                    async with http.post("/read", json={"Stud_id": {"low": low, "high": low + args.span - 1}}) as r:
                        assert r.status == 200, await r.text()

                secs, lat = await run_all(batches, args.concurrency, write)
                lb_w = report("balancer  POST /write", secs, len(ids), lat)
                secs, lat = await run_all(reads, args.concurrency, read)
                lb_r = report("balancer  POST /read", secs, len(reads), lat, "reads")
                async with http.get("/status") as r:
                    placement = (await r.json())["servers"]

            uris = engine_uris(db)
            clients = {name: AsyncMongoClient(uri) for name, uri in uris.items()}
            dbs = {name: c["bench"].with_options(write_concern=WriteConcern(w=1, j=True))
                   for name, c in clients.items()}
            holders = {shard: [n for n, s in placement.items() if shard in s]
                       for shard in ("sh1", "sh2", "sh3", "sh4")}
            for d in dbs.values():
                for shard in holders:
                    await d[shard].create_index("Stud_id", unique=True)

            async def direct_write(batch: list[int]) -> None:
                groups: dict[str, list[dict[str, Any]]] = {}
                for i in batch:
                    groups.setdefault(shard_of(i), []).append(row(i))
                await asyncio.gather(*(dbs[name][shard].insert_many([dict(r) for r in rows])
                                       for shard, rows in groups.items()
                                       for name in holders[shard]))

            async def direct_read(low: int) -> None:
                high = low + args.span - 1
                shards = sorted({shard_of(low), shard_of(high)})
                for shard in shards:
                    name = rng.choice(holders[shard])
                    await dbs[name][shard].find({"Stud_id": {"$gte": low, "$lte": high}},
                                                {"_id": 0}).to_list()

            secs, lat = await run_all(batches, args.concurrency, direct_write)
            direct_w = report("direct    insert x3 (j)", secs, len(ids), lat)
            secs, lat = await run_all(reads, args.concurrency, direct_read)
            direct_r = report("direct    find", secs, len(reads), lat, "reads")
            for c in clients.values():
                await c.close()
            print(f"\nwrites: balancer/direct = {lb_w / direct_w:.2f}   "
                  f"reads: balancer/direct = {lb_r / direct_r:.2f}")
        finally:
            db.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--reads", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=1, help="rows per POST /write")
    ap.add_argument("--span", type=int, default=10, help="ids per read range")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.rows > 16384:
        sys.exit("--rows: the seed's four shards hold 16384 ids")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
