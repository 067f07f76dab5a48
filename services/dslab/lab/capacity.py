"""Capacity editions: the experiments with a CPU capacity per server (``--replica-cpus``).

Uncapped, every replica shares the machine's cores with the balancer and the clients, so a
replica adds contention, not capacity. With a quota per replica (a cgroup each, or a
container's CPU limit) a replica is a server with a capacity of its own, as on a real
deployment, and the experiments can show what the design is for: throughput that grows with N
when the hash spreads the load, and a hot replica that caps it when the hash does not.

    available              None, or why quotas cannot be had here (not root, no cgroups)
    replica_capacity       requests/s one capped replica serves alone behind the balancer (wrk)
    throughput_by_n        requests/s through the balancer against N, grown by /add (wrk), with
                           the busiest / mean share of that run, counted by the balancer
    predicted              N x capacity / (busiest / mean): what that spread allows
    observations           the findings as text, each only when the numbers show it
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import httpx
import pandas as pd

from ..supervisor.cgroups import CgroupError, CpuGroups
from .baseline import wrk
from .lb import HashConfig, grow_to, lb_stack, replicas, served_by_metrics
from .progress import RunProgress

__all__ = ["available", "observations", "predicted", "replica_capacity", "spread_of",
           "throughput_by_n"]

# growth from the smallest to the largest N: at least GREW x is "grew", below FELL x "fell"
GREW, FELL = 1.2, 0.9


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


def predicted(n: int, capacity: float, busiest_over_mean: float) -> float:
    """Throughput at which the busiest replica saturates: N x capacity / (busiest / mean)."""
    return n * capacity / busiest_over_mean


def spread_of(before: Mapping[str, int], after: Mapping[str, int], names: Sequence[str]) -> float:
    """busiest / mean of the requests each of ``names`` served between two counts of the
    balancer's /metrics (a replica that served none counts as 0)."""
    served = [after.get(name, 0) - before.get(name, 0) for name in names]
    total = sum(served)
    if total <= 0:
        raise ValueError("no request was served between the two counts")
    return max(served) / (total / len(names))


def throughput_by_n(configs: Sequence[HashConfig], ns: Sequence[int], cpus: float | None,
                    seconds: float = 3.0, connections: int = 32,
                    capacity: float | None = None) -> pd.DataFrame:
    """For each configuration, one balancer grown by /add from ns[0] to ns[-1] replicas, each
    capped at ``cpus`` cores (None: uncapped); at every N, requests/s through it with wrk, the
    busiest replica's share of that run against the mean (the balancer's /metrics), and with
    the one-replica ``capacity`` given, the throughput that share allows."""
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
                names = replicas(balancer)
                before = served_by_metrics(balancer)
                result = wrk([url], seconds, connections)
                spread = spread_of(before, served_by_metrics(balancer), names)
                progress.done(result.rps * seconds, seconds, f"{config.label}, N = {n}")
                rows.append({"world": world, "config": config.label, "N": n, "rps": result.rps,
                             "p99_ms": result.p99_ms, "errors": result.errors,
                             "busiest_over_mean": spread,
                             "predicted": predicted(n, capacity, spread) if capacity
                             else float("nan")})
    return pd.DataFrame(rows)


def _names(labels: Sequence[str]) -> str:
    """Configurations in a sentence (their labels may hold commas): "a", "a and b",
    "a; b and c"."""
    labels = list(labels)
    return labels[0] if len(labels) == 1 else "; ".join(labels[:-1]) + " and " + labels[-1]


def _growth_phrase(ratio: float) -> str:
    if ratio >= GREW:
        return "grew"
    if ratio < FELL:
        return "fell"
    return f"stayed within {max(abs(ratio - 1), 0.005):.0%}"


def observations(measured: pd.DataFrame, capacity: float | None, cpus: float | None) -> str:
    """What the runs show, computed: growth from the smallest to the largest N in each world
    and configuration, and how close the capped runs came to what their spread allows."""
    out = []
    for world, part in measured.groupby("world", sort=False):
        growth: list[tuple[str, float, float]] = []
        for label, runs in part.groupby("config", sort=False):
            ordered = runs.sort_values("N")
            growth.append((str(label), float(ordered.rps.iloc[0]), float(ordered.rps.iloc[-1])))
        n0, n1 = int(part.N.min()), int(part.N.max())
        listing = "; ".join(f"{label} {a:,.0f} → {b:,.0f} requests/s ({b / a:.2f}×)"
                            for label, a, b in growth)
        out.append(f"**{str(world).capitalize()}**, N = {n0} → {n1}: {listing}.")
        if n1 == n0:  # one N only: nothing to say about growth
            continue
        by_phrase: dict[str, list[str]] = {}
        for label, a, b in growth:
            by_phrase.setdefault(_growth_phrase(b / a), []).append(label)
        out.append(" ".join(f"Throughput {phrase} for {_names(labels)}."
                            for phrase, labels in by_phrase.items()))
        last = part[part.N == n1].set_index("config")
        if last.predicted.notna().any():
            near = [str(c) for c in last.index if abs(last.rps[c] / last.predicted[c] - 1) < 0.25]
            if near:
                out.append(f"At N = {n1}, {_names(near)} came within 25% of N × capacity / "
                           "(busiest / mean): the throughput at which the busiest replica "
                           "saturates.")
    capped = measured[measured.predicted.notna()]
    if capacity is not None and cpus is not None and len(capped):
        ratio = (capped.rps / capped.predicted).median()
        out.append(f"One replica capped at {cpus:g} core served {capacity:,.0f} requests/s alone "
                   f"behind the balancer; the capped runs reached a median {ratio:.0%} of "
                   "N × that / (busiest / mean), with busiest / mean counted by the balancer "
                   "in each run.")
    errors = int(measured.errors.sum())
    if errors:
        out.append(f"wrk counted {errors} errors.")
    return " ".join(out)
