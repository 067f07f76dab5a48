"""Part 1 experiments (seed section V), as functions that return DataFrames.

Every function starts the real stack it needs (``python -m dslab.balancer`` and its replica
processes) and stops it again, so a notebook cell is one call and a plot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from ..balancer import native
from ..ring import ConsistentHashRing, HashRing, make_ring
from ..ring.analysis import loads
from ..stack import BalancerProcess
from .load import fire, load, random_rids, run_sync, tour
from .progress import RunProgress

__all__ = [
    "HashConfig",
    "KILL_CONFIG",
    "balance_table",
    "endpoint_tour",
    "grow_to",
    "kill_under_load",
    "lb_stack",
    "plane_note",
    "reach",
    "replicas",
    "requests_per_server",
    "retries_by_metrics",
    "ring_layout",
    "served_by_metrics",
    "scaling",
    "summarize",
]


@dataclass(frozen=True)
class HashConfig:
    """A balancer configuration to compare: algorithm, hash functions, and the ring's options."""

    label: str
    hashes: str = "seed"
    vnodes: int = 9
    slots: int = 512
    algorithm: str = "ring"
    balance_factor: float | None = None  # c of bounded loads (--balance-factor); None: off
    cpus: float | None = None  # a CPU capacity per replica (--replica-cpus); None: uncapped
    # The experiments compare hashes and replicas, beside HAProxy on one thread: one balancer
    # process keeps the balancer's own speed out of the comparison (bench-lb measures it).
    workers: int = 1
    # The balancer's default (auto): the native plane where it routes the configuration (the
    # ring, no bounded loads), the Python plane elsewhere. Experiments that compare
    # configurations the native plane cannot all route pin "python", so that a difference
    # between two of them is theirs, not the planes'.
    plane: str = "auto"

    def plane_used(self) -> tuple[str, str | None]:
        """(the plane the balancer runs for this configuration, why not the native one)."""
        if self.plane == "python":
            return "python", "pinned, to compare configurations the native plane cannot route"
        why = native.refusal(self.ring([]), self.balance_factor)
        return ("python", why) if why else ("native", None)

    def args(self, n: int) -> list[str]:
        args = ["-n", str(n), "--hash", self.hashes, "--vnodes", str(self.vnodes),
                "--slots", str(self.slots), "--algorithm", self.algorithm,
                "--workers", str(self.workers), "--plane", self.plane]
        if self.balance_factor is not None:
            args += ["--balance-factor", str(self.balance_factor)]
        if self.cpus is not None:
            args += ["--replica-cpus", str(self.cpus)]
        return args

    def ring(self, names: Sequence[str]) -> HashRing:
        """The balancer's own structure with ``names``, added in order as the balancer does."""
        ring = make_ring(self.algorithm, self.hashes, slots=self.slots, vnodes=self.vnodes)
        for name in names:
            ring.add(name)
        return ring


KILL_CONFIG = HashConfig("seed")  # A-3's kill under load (it was labelled "blake2b" but hashed with the seed)


def plane_note(configs: Sequence[HashConfig]) -> str:
    """A line for a report: which plane proxied the configurations, and why not the native
    one (the default's) where it did not; configurations named in italics (names may hold
    commas)."""
    groups: dict[tuple[str, str | None, int], list[str]] = {}
    for config in configs:
        plane, why = config.plane_used()
        groups.setdefault((plane, why, config.workers), []).append(f"*{config.label}*")
    parts = [f"the **{plane}** plane, {workers} worker{'s' if workers != 1 else ''}"
             + (f" ({why})" if why else "") + ": " + ", ".join(labels)
             for (plane, why, workers), labels in groups.items()]
    return "Balancer: " + "; ".join(parts) + "."


@contextlib.contextmanager
def lb_stack(n: int = 3, config: HashConfig = HashConfig("seed")) -> Iterator[BalancerProcess]:
    """A running Part 1 balancer with ``n`` replicas; stopped (with them) on leaving."""
    balancer = BalancerProcess("dslab.balancer", args=config.args(n)).start()
    try:
        yield balancer
    finally:
        balancer.stop()


def replicas(balancer: BalancerProcess) -> list[str]:
    return list(httpx.get(f"{balancer.url}/rep", timeout=10).json()["message"]["replicas"])


def grow_to(balancer: BalancerProcess, admin: httpx.Client, n: int) -> list[str]:
    """POST /add the replicas that take ``balancer`` to ``n``, named ``Server<k>`` as a fresh
    start names them; returns the newcomers (none if it has ``n`` already)."""
    newcomers = [f"Server{k}" for k in range(len(replicas(balancer)) + 1, n + 1)]
    if newcomers:
        admin.post("/add", json={"n": len(newcomers), "hostnames": newcomers}).raise_for_status()
    return newcomers


def requests_per_server(n_requests: int = 10000, n: int = 3, config: HashConfig = HashConfig("seed"),
                        concurrency: int = 64, seed: int = 0) -> pd.DataFrame:
    """A-1: ``n_requests`` async GET /home on ``n`` replicas: one row per request."""
    with lb_stack(n, config) as balancer:
        names = replicas(balancer)
        df = fire(balancer.url, random_rids(n_requests, seed), concurrency=concurrency)
        counted = served_by_metrics(balancer)
    seen = df[df.status == 200].server.value_counts().to_dict()
    if counted != seen:  # the balancer's own count must be what the clients saw
        raise RuntimeError(f"GET /metrics counts {counted}, X-Served-By counts {seen}")
    df["N"] = n
    df["config"] = config.label
    df.attrs["replicas"] = names
    return df


def served_by_metrics(balancer: BalancerProcess) -> dict[str, int]:
    """Requests answered 200, per replica, as the balancer's GET /metrics counts them."""
    return {s.labels["replica"]: int(s.value) for s in _samples(balancer)
            if s.name == "dslab_requests_total" and s.labels.get("code") == "200"}


def retries_by_metrics(balancer: BalancerProcess) -> int:
    """Requests the balancer answered from another replica than the ring's first choice."""
    return sum(int(s.value) for s in _samples(balancer) if s.name == "dslab_retries_total")


def _samples(balancer: BalancerProcess) -> list[Any]:
    text = httpx.get(f"{balancer.url}/metrics", timeout=10).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Requests per server (servers that got none included), per (config, N)."""
    rows = []
    groups = list(df.groupby(["config", "N"], sort=False))
    for (label, n), part in groups:
        ok = part[part.status == 200]
        known = df.attrs.get("replicas") if len(groups) == 1 else None
        names = known or sorted(ok.server.unique())
        for server, count in loads(ok.server, names).items():
            rows.append({"config": label, "N": n, "server": server, "requests": count})
        failed = len(part) - len(ok)
        if failed:
            rows.append({"config": label, "N": n, "server": "(failed)", "requests": failed})
    return pd.DataFrame(rows)


def balance_table(per_server: pd.DataFrame) -> pd.DataFrame:
    """Per (config, N): mean, std, min, max requests per server and max/mean."""
    real = per_server[per_server.server != "(failed)"]
    table = real.groupby(["config", "N"], sort=False).requests.agg(["mean", "std", "min", "max"])
    table["max_over_mean"] = table["max"] / table["mean"]
    return table.reset_index()


def scaling(ns: Sequence[int] = (2, 3, 4, 5, 6), n_requests: int = 10000,
            config: HashConfig = HashConfig("seed"), concurrency: int = 64,
            seed: int = 0) -> pd.DataFrame:
    """A-2: the A-1 run for every N; requests per server for each."""
    parts = []
    progress = RunProgress(config.label, len(ns))
    for n in ns:
        df = requests_per_server(n_requests, n, config, concurrency, seed)
        progress.done(len(df), float(df.end.max() - df.start.min()), f"N = {n}")
        parts.append(summarize(df))
    return pd.concat(parts, ignore_index=True)


def endpoint_tour(balancer: BalancerProcess) -> pd.DataFrame:
    """A-3: every endpoint once, with what it answered (including the errors)."""
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/rep", None),
        ("GET", "/home", None),
        ("GET", "/heartbeat", None),
        ("GET", "/other", None),
        ("POST", "/add", {"n": 2, "hostnames": ["S5"]}),
        ("POST", "/add", {"n": 2, "hostnames": ["S5", "S4", "S10", "S11"]}),
        ("POST", "/add", {"n": 1, "hostnames": ["S5"]}),
        ("POST", "/add", {"n": "two"}),
        ("DELETE", "/rm", {"n": 2, "hostnames": ["S5"]}),
        ("DELETE", "/rm", {"n": 2, "hostnames": ["S5", "S4", "S10", "S11"]}),
        ("DELETE", "/rm", {"n": 1, "hostnames": ["nobody"]}),
        ("GET", "/rep", None),
    ]
    return tour(balancer.url, calls)


def kill_under_load(n: int = 3, seconds: float = 6.0, kill_at: float = 2.0,
                    victim: str | None = None, concurrency: int = 16,
                    config: HashConfig = KILL_CONFIG, seed: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A-3: continuous GET /home; one replica is SIGKILLed ``kill_at`` seconds in.

    Returns one row per request and the events: which replica died and when, which replica
    replaced it, when /rep first showed it and when it first served a request (seconds since
    the load started), how many requests the balancer retried on another replica (its
    /metrics), and how many requests failed, by status (0: no answer).
    """
    with lb_stack(n, config) as balancer:
        names = replicas(balancer)
        victim = victim or names[0]
        process = balancer.replica_processes()[victim]
        events: dict[str, Any] = {"victim": victim, "replicas_before": names}

        async def scenario() -> pd.DataFrame:
            rng = random.Random(seed)
            t0 = time.perf_counter()
            deadline = t0 + seconds

            def next_rid() -> int | None:
                return rng.randint(100000, 999999) if time.perf_counter() < deadline else None

            async def kill_and_watch() -> None:
                await asyncio.sleep(kill_at)
                os.kill(process.pid, signal.SIGKILL)
                events["killed_at"] = time.perf_counter() - t0
                loop = asyncio.get_running_loop()
                while time.perf_counter() < deadline:
                    now = await loop.run_in_executor(None, replicas, balancer)
                    if victim not in now and len(now) == n:
                        events["listed_at"] = time.perf_counter() - t0
                        events["replacement"] = (set(now) - set(names)).pop()
                        events["replicas_after"] = now
                        return
                    await asyncio.sleep(0.02)

            results = await asyncio.gather(load(balancer.url, "/home", next_rid, concurrency, 30),
                                           kill_and_watch())
            return results[0]

        retries_before = retries_by_metrics(balancer)
        df = run_sync(scenario())
        events["retries"] = retries_by_metrics(balancer) - retries_before
    newcomer = events.get("replacement")
    served = df[(df.server == newcomer) & (df.status == 200)] if newcomer else df.iloc[0:0]
    events["first_served_at"] = float(served.end.min()) if len(served) else None
    if events.get("killed_at") is not None and events["first_served_at"] is not None:
        events["recovery_s"] = events["first_served_at"] - events["killed_at"]
    events["failed"] = int((df.status != 200).sum())
    failed = df[df.status != 200].status.value_counts()
    events["failed_statuses"] = {int(code): int(failed[code]) for code in failed.index}
    events["requests"] = len(df)
    return df, events


def ring_layout(config: HashConfig, names: Sequence[str]) -> pd.DataFrame:
    """A-4: slot -> the server whose virtual node sits there, and who serves the slot."""
    ring = config.ring(names)
    if not isinstance(ring, ConsistentHashRing):
        raise ValueError(f"{config.label}: only the ring (algorithm 'ring') has slots to draw")
    return pd.DataFrame({"slot": range(ring.slots), "node": ring.owners(),
                         "served_by": ring.arc_owners(), "config": config.label})


def reach(config: HashConfig, names: Sequence[str], rids: Sequence[int]) -> pd.DataFrame:
    """A-1: the distinct ring slots ``rids`` hash to, counted by the replica whose arc holds
    them (every replica listed, those whose arcs no id reached with 0)."""
    ring = config.ring(names)
    if not isinstance(ring, ConsistentHashRing):
        raise ValueError(f"{config.label}: only the ring (algorithm 'ring') has slots")
    arcs = ring.arc_owners()
    reached = {ring.slot_of(rid) for rid in rids}
    counts = pd.Series([arcs[slot] for slot in reached]).value_counts()
    return pd.DataFrame({"server": list(names),
                         "slots_reached": [int(counts.get(name, 0)) for name in names]}
                        ).assign(slots=ring.slots)
