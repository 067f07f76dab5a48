"""Capacity editions: the experiments with a CPU capacity per server (``--replica-cpus``).

On this machine every replica shares two cores with the balancer and the clients, so a replica
adds contention, not capacity. With a quota per replica (a cgroup each, or a container's CPU
limit) a replica is a server with a capacity of its own, as on a real deployment, and the
experiments can show what the design is for: throughput that grows with N when the hash
spreads the load, and a hot replica that caps it when the hash does not.

    available              None, or why quotas cannot be had here (not root, no cgroups)
    replica_capacity       requests/s one capped replica serves alone behind the balancer (wrk)
    throughput_by_n        requests/s through the balancer against N, grown by /add (wrk)
    predicted              N x capacity / (busiest / mean): what the ring's shares allow
    observations           the findings as text, each only when the numbers show it
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import httpx
import pandas as pd

from ..ring.analysis import assign, loads
from ..supervisor.cgroups import CgroupError, CpuGroups
from .baseline import wrk
from .lb import HashConfig, grow_to, lb_stack
from .load import random_rids
from .progress import RunProgress

__all__ = ["available", "observations", "predicted", "replica_capacity", "throughput_by_n"]


def available() -> str | None:
    """None where a CPU quota per replica can be set here; else the reason."""
    try:
        CpuGroups(1.0, f"dslab-probe-{os.getpid()}").close()
    except CgroupError as exc:
        return str(exc)
    return None


def replica_capacity(cpus: float, seconds: float = 3.0, connections: int = 32) -> float:
    """Requests/s one replica capped at ``cpus`` serves, alone behind the balancer (the same
    path as the runs it predicts: pooled keep-alive connections from the balancer)."""
    with lb_stack(1, HashConfig("one", "blake2b", cpus=cpus)) as balancer:
        url = f"{balancer.url}/home"
        wrk([url], 1, connections)  # warm-up
        return wrk([url], seconds, connections).rps


def busiest_over_mean(config: HashConfig, n: int, n_ids: int = 20000) -> float:
    """The ring's own busiest / mean share with ``n`` replicas, over many random ids (the
    bound c for bounded loads, when it is below the hash's)."""
    names = [f"Server{i}" for i in range(1, n + 1)]
    counts = loads(assign(config.ring(names), random_rids(n_ids, 1)), names)
    ratio = max(counts.values()) / (n_ids / n)
    return min(ratio, config.balance_factor) if config.balance_factor else ratio


def predicted(config: HashConfig, n: int, capacity: float) -> float:
    """Throughput at which the busiest replica saturates: N x capacity / (busiest / mean)."""
    return n * capacity / busiest_over_mean(config, n)


def throughput_by_n(configs: Sequence[HashConfig], ns: Sequence[int], cpus: float | None,
                    seconds: float = 3.0, connections: int = 32,
                    capacity: float | None = None) -> pd.DataFrame:
    """For each configuration, one balancer grown by /add from ns[0] to ns[-1] replicas, each
    capped at ``cpus`` cores (None: uncapped); at every N, requests/s through it with wrk, and
    with the one-replica ``capacity`` given, the throughput the ring's shares predict."""
    ns = sorted(ns)
    rows: list[dict[str, Any]] = []
    world = f"capped at {cpus:g} core" if cpus else "uncapped"
    progress = RunProgress(f"throughput, {world}", len(configs) * len(ns))
    for config in configs:
        with lb_stack(ns[0], replace(config, cpus=cpus)) as balancer, \
                httpx.Client(base_url=balancer.url, timeout=60) as admin:
            url = f"{balancer.url}/home"
            wrk([url], 1, connections)  # warm-up
            for n in ns:
                grow_to(balancer, admin, n)
                result = wrk([url], seconds, connections)
                progress.done(result.rps * seconds, seconds, f"{config.label}, N = {n}")
                rows.append({"world": world, "config": config.label, "N": n, "rps": result.rps,
                             "p99_ms": result.p99_ms, "errors": result.errors,
                             "predicted": predicted(config, n, capacity) if capacity
                             else float("nan")})
    return pd.DataFrame(rows)


def observations(measured: pd.DataFrame, capacity: float | None, cpus: float | None) -> str:
    """What the runs show, computed: growth from the smallest to the largest N in each world
    and configuration, and how close the capped runs came to the prediction."""
    out = []
    for world, part in measured.groupby("world", sort=False):
        growth: list[tuple[str, float, float, int, int]] = []
        for label, runs in part.groupby("config", sort=False):
            ordered = runs.sort_values("N")
            growth.append((str(label), float(ordered.rps.iloc[0]), float(ordered.rps.iloc[-1]),
                           int(ordered.N.iloc[0]), int(ordered.N.iloc[-1])))
        listing = "; ".join(f"{label} {a:,.0f} → {b:,.0f} requests/s ({b / a:.2f}×)"
                            for label, a, b, _, _ in growth)
        n0, n1 = growth[0][3], growth[0][4]
        out.append(f"**{str(world).capitalize()}**, N = {n0} → {n1}: {listing}.")
        if n1 == n0:  # one N only: nothing to say about growth
            continue
        grew = [label for label, a, b, _, _ in growth if b > 1.5 * a]
        flat = [label for label, a, b, _, _ in growth if b < 1.2 * a]
        if grew:
            out.append(f"Throughput grew with N for {', '.join(grew)}.")
        if flat and world == "uncapped":
            out.append(f"It hardly grew for {', '.join(flat)}: with the replicas uncapped, "
                       "they, the balancer and the clients share the same cores.")
        elif flat:
            last = part[part.N == n1].set_index("config")
            saturated = [c for c in flat if abs(last.rps[c] / last.predicted[c] - 1) < 0.25]
            out.append(f"It hardly grew for {', '.join(flat)}"
                       + (f"; {', '.join(saturated)} within 25% of the prediction: the busiest "
                          "replica saturates while the others idle." if saturated else "."))
    capped = measured[measured.predicted.notna()]
    if capacity is not None and cpus is not None and len(capped):
        ratio = (capped.rps / capped.predicted).median()
        out.append(f"One replica capped at {cpus:g} core served {capacity:,.0f} requests/s alone "
                   f"behind the balancer; "
                   f"the capped runs reached a median {ratio:.0%} of N × that / (busiest / mean), "
                   f"the throughput at which the ring's busiest replica saturates.")
    errors = int(measured.errors.sum())
    if errors:
        out.append(f"wrk counted {errors} errors.")
    return " ".join(out)
