"""Part 2's two designs under the same load and faults, in one run: ``--replication all``
against ``--replication majority``, on the process backend with the seed's configuration.

Writers send single-row writes (fresh Stud_ids, spread over the four shards) for the whole
run. Windows, each timed by the writes that began in it:

* ``no fault``;
* ``secondary paused``: one server of sh1 (primary of no shard) stopped for ``--pause`` seconds
  (SIGSTOP, SIGCONT), ``--pauses`` times, shorter than the heartbeats' detection, so it is
  never evicted;
* ``primary killed``: sh1's primary (under ``all``: the same server) killed with SIGKILL, and
  the time from the kill to the next acknowledged write of sh1.

Prints, per design and window, writes/s, p50, p99 and max, then the ratios the issue names:
majority's no-fault throughput over all's, and each design's p99 with a paused secondary over
its no-fault p99; and the CPU time the stack's processes spent per acknowledged write in the
no-fault window (balancer, shard servers, engines: where a CPU-bound run goes). Every
exception a client meets counts as a failed write.

``--reads``: instead, reads under a mixed load (``--writers`` writers and ``--readers``
readers of 10-id ranges, no fault) for each design and read consistency, and linearizable
reads/s over any's per design.

    .venv/bin/python bench/bench_replication.py [--writers 16] [--seconds 8] [--reads]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import aiohttp
import httpx
import psutil

from dslab.db.seed import SEED_SERVERS, seed_init
from dslab.stack import BalancerProcess

SHARD_SIZE = 4096


@dataclass
class Write:
    start: float
    seconds: float
    ok: bool
    shard: str


@dataclass
class Run:
    writes: list[Write] = field(default_factory=list)
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)
    failover: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # seconds, no-fault window, per kind


def cpu_seconds(db: BalancerProcess) -> dict[str, float]:
    """CPU seconds (user + system) so far of the balancer, its shard servers and their
    engines."""
    spent: dict[str, float] = {}
    root = psutil.Process(db.pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            command = " ".join(proc.cmdline())
            times = proc.cpu_times()
        except psutil.Error:  # gone meanwhile
            continue
        kind = ("balancer" if proc.pid == db.pid else
                "shard servers" if "dslab.shard" in command else "engines")
        spent[kind] = spent.get(kind, 0.0) + times.user + times.system
    return spent


def primary_of(client: httpx.Client, shard: str) -> str | None:
    found = re.search(rf'^dslab_db_shard_primary{{server="(\w+)",shard="{shard}"}} 1\.0$',
                      client.get("/metrics").text, re.M)
    return found[1] if found else None


async def writers(url: str, n: int, run: Run, stop: asyncio.Event) -> None:
    ids = itertools.count()

    async def one(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            k = next(ids)
            shard = k % 4
            stud_id = shard * SHARD_SIZE + k // 4
            body = {"data": [{"Stud_id": stud_id, "Stud_name": f"n{k}", "Stud_marks": k % 100}]}
            started = time.monotonic()
            try:
                async with session.post(f"{url}/write", json=body) as answer:
                    await answer.read()
                    ok = answer.status == 200
            except Exception:  # a timeout or a dropped connection is a failed write
                ok = False
            run.writes.append(Write(started, time.monotonic() - started, ok, f"sh{shard + 1}"))

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session) for _ in range(n)))


async def scenario(db: BalancerProcess, mode: str, args: argparse.Namespace) -> Run:
    run = Run()
    stop = asyncio.Event()
    with httpx.Client(base_url=db.url, timeout=60) as client:
        assert client.post("/init", json=seed_init()).status_code == 200
        for shard in range(4):  # every shard written once (under majority: its primary elected)
            row = {"Stud_id": shard * SHARD_SIZE + SHARD_SIZE - 1, "Stud_name": "w",
                   "Stud_marks": 1}
            assert client.post("/write", json={"data": [row]}).status_code == 200
        load = asyncio.ensure_future(writers(db.url, args.writers, run, stop))
        loop = asyncio.get_running_loop()

        start, cpu_before = time.monotonic(), cpu_seconds(db)
        await asyncio.sleep(args.seconds)
        run.windows["no fault"] = (start, time.monotonic())
        cpu_after = cpu_seconds(db)
        run.cpu = {kind: cpu_after[kind] - cpu_before.get(kind, 0.0) for kind in cpu_after}

        # Under majority, a server that is primary of no shard: one that is sh1's secondary
        # may be another shard's primary, and pausing that is the next window's fault.
        leading = {primary_of(client, f"sh{i}") for i in range(1, 5)} if mode == "majority" \
            else set()
        sh1 = [n for n, shards in SEED_SERVERS.items() if "sh1" in shards]
        paused = next((n for n in sh1 if n not in leading), None)
        if paused is None:
            raise SystemExit(f"every server of sh1 leads a shard ({sorted(leading)}): run again")
        pid = db.replica_processes()[paused].pid
        start = time.monotonic()
        for _ in range(args.pauses):
            os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(args.pause)
            os.kill(pid, signal.SIGCONT)
            await asyncio.sleep(args.pause / 2)
        run.windows["secondary paused"] = (start, time.monotonic())

        await asyncio.sleep(args.seconds / 2)  # settle
        victim = primary_of(client, "sh1") if mode == "majority" else sh1[0]
        assert victim is not None
        killed = time.monotonic()
        os.kill(db.replica_processes()[victim].pid, signal.SIGKILL)
        await asyncio.sleep(args.seconds)
        run.windows["primary killed"] = (killed, time.monotonic())
        after = [w.start + w.seconds for w in run.writes
                 if w.ok and w.shard == "sh1" and w.start >= killed]
        run.failover = min(after) - killed if after else None

        stop.set()
        await load
        del loop
    return run


async def readers(url: str, n: int, stop: asyncio.Event) -> tuple[int, int]:
    """(reads answered, reads failed) of ``n`` readers of 10-id ranges until ``stop``."""
    counts = [0, 0]
    ranges = itertools.count()

    async def one(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            k = next(ranges)
            low = (k % 4) * SHARD_SIZE + (k * 7) % 200
            try:
                async with session.post(f"{url}/read",
                                        json={"Stud_id": {"low": low, "high": low + 9}}) as answer:
                    await answer.read()
                    counts[0 if answer.status == 200 else 1] += 1
            except Exception:  # a timeout or a dropped connection is a failed read
                counts[1] += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(one(session) for _ in range(n)))
    return counts[0], counts[1]


async def mixed(db: BalancerProcess, args: argparse.Namespace) -> tuple[float, int]:
    """Reads/s (and failed reads) with writers beside them, no fault."""
    with httpx.Client(base_url=db.url, timeout=60) as client:
        assert client.post("/init", json=seed_init()).status_code == 200
    stop = asyncio.Event()
    started = time.monotonic()
    write = asyncio.ensure_future(writers(db.url, args.writers, Run(), stop))
    read = asyncio.ensure_future(readers(db.url, args.readers, stop))
    await asyncio.sleep(args.seconds)
    stop.set()
    served, failed = await read
    elapsed = time.monotonic() - started
    await write
    return served / elapsed, failed


def reads_main(args: argparse.Namespace) -> None:
    rates: dict[tuple[str, str], float] = {}
    for design in ("all", "majority"):
        for consistency in ("linearizable", "any"):
            with tempfile.TemporaryDirectory() as state:
                db = BalancerProcess("dslab.db", args=["--state-dir", state, "--replication",
                                                       design, "--read-consistency",
                                                       consistency])
                db.start()
                try:
                    rate, failed = asyncio.run(mixed(db, args))
                finally:
                    db.stop()
            rates[(design, consistency)] = rate
            print(f"{design:<10}{consistency:<14}{rate:>8.0f} reads/s  {failed} failed",
                  flush=True)
    for design in ("all", "majority"):
        print(f"{design}: linearizable / any reads per second: "
              f"{rates[(design, 'linearizable')] / rates[(design, 'any')]:.2f}")


def window_stats(run: Run, name: str) -> dict[str, float]:
    start, end = run.windows[name]
    inside = [w for w in run.writes if start <= w.start < end]
    ok = sorted(w.seconds for w in inside if w.ok)
    failed = sum(1 for w in inside if not w.ok)
    if not ok:
        return {"per_s": 0.0, "p50": float("nan"), "p99": float("nan"), "max": float("nan"),
                "failed": failed}
    return {"per_s": len(ok) / (end - start),
            "p50": statistics.median(ok) * 1000,
            "p99": ok[min(len(ok) - 1, int(0.99 * len(ok)))] * 1000,
            "max": ok[-1] * 1000, "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--pause", type=float, default=2.0)
    parser.add_argument("--pauses", type=int, default=3)
    parser.add_argument("--reads", action="store_true")
    parser.add_argument("--readers", type=int, default=12)
    args = parser.parse_args()
    if args.reads:
        reads_main(args)
        return

    results: dict[str, Run] = {}
    for mode in ("all", "majority"):
        with tempfile.TemporaryDirectory() as state:
            db = BalancerProcess("dslab.db", args=["--state-dir", state, "--replication", mode])
            db.start()
            try:
                print(f"{mode}: running ({args.writers} writers)...", flush=True)
                results[mode] = asyncio.run(scenario(db, mode, args))
            finally:
                db.stop()

    print(f"\n{'design':<10}{'window':<19}{'writes/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'max ms':>9}{'failed':>8}")
    stats = {}
    for mode, run in results.items():
        for name in run.windows:
            s = stats[(mode, name)] = window_stats(run, name)
            print(f"{mode:<10}{name:<19}{s['per_s']:>10.0f}{s['p50']:>9.0f}{s['p99']:>9.0f}"
                  f"{s['max']:>9.0f}{s['failed']:>8}")
    print()
    print(f"majority/all writes per second, no fault: "
          f"{stats[('majority', 'no fault')]['per_s'] / stats[('all', 'no fault')]['per_s']:.2f}")
    for mode in results:
        ratio = stats[(mode, "secondary paused")]["p99"] / stats[(mode, "no fault")]["p99"]
        print(f"{mode}: p99 with a secondary paused {args.pause:g} s / no-fault p99: "
              f"{ratio:.2f}")
    for mode, run in results.items():
        start, end = run.windows["no fault"]
        acknowledged = sum(1 for w in run.writes if w.ok and start <= w.start < end)
        per_write = {kind: f"{seconds / acknowledged * 1000:.2f}"
                     for kind, seconds in sorted(run.cpu.items())}
        print(f"{mode}: CPU ms per acknowledged write, no fault: "
              f"{sum(run.cpu.values()) / acknowledged * 1000:.2f} ({per_write})")
    for mode, run in results.items():
        failover = "no sh1 write acknowledged" if run.failover is None else f"{run.failover:.2f} s"
        print(f"{mode}: from sh1's primary (all: a server of sh1) killed to sh1's next "
              f"acknowledged write: {failover}")


if __name__ == "__main__":
    main()
