"""Part 1 A-4: the consistent-hashing algorithms engineers choose between, on live traffic.

Each function returns a DataFrame; ``observations`` turns them into text.

- ``grow``: one balancer per configuration, grown one replica at a time with POST /add (named
  ``Server<k>``, as a fresh start would name them), the same request ids sent through it at
  every N: requests per replica (balance) and the share of ids whose replica changed against
  the N before (disruption on a join; the ideal is the newcomers' fair share). Then a replica
  from the middle leaves with DELETE /rm (disruption on a removal; ideal 1/N).
- ``lookup_costs``: the structure alone, in this process: microseconds per lookup, the time to
  rebuild on a membership change, and the memory it holds.
- ``throughput``: every configuration's balancer up at once, loaded in turn with wrk, in
  rounds so the machine's drift hits all; HAProxy in front of the same replicas as reference.
- ``haproxy_side_by_side``: bounded loads in our balancer and HAProxy's ``hash-balance-factor``
  on the same replicas with the same request ids, each with and without the bound.
"""

from __future__ import annotations

import contextlib
import random
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pandas as pd

from ..keeper.bounded import InFlight, bounded_walk
from ..ring import HashRing
from ..ring.analysis import loads
from .baseline import HAProxy, HAProxyBackend, wrk
from .lb import HashConfig, grow_to, lb_stack, replicas
from .load import fire
from .progress import RunProgress

__all__ = [
    "CONFIGS",
    "WORKLOADS",
    "grow",
    "haproxy_side_by_side",
    "hot_rids",
    "lookup_costs",
    "observations",
    "pick",
    "throughput",
    "unique_rids",
]

# The configurations A-4 compares, by label (a notebook parameter picks some by label).
# Compared on one plane, the Python one: it routes every algorithm and bounded loads (the
# native plane, the default's, routes the ring without bounds only).
CONFIGS: dict[str, HashConfig] = {c.label: c for c in [
    HashConfig("ring seed", plane="python"),  # the assignment's: its quadratic hash, K = 9 on 512 slots
    HashConfig("ring K9", "blake2b", plane="python"),
    HashConfig("ring K100", "blake2b", vnodes=100, slots=4096, plane="python"),
    HashConfig("maglev", "blake2b", algorithm="maglev", plane="python"),
    HashConfig("rendezvous", "blake2b", algorithm="rendezvous", plane="python"),
    HashConfig("multi-probe", "blake2b", algorithm="multiprobe", plane="python"),
    HashConfig("jump", "blake2b", algorithm="jump", plane="python"),
    HashConfig("ring seed bounded 1.25", balance_factor=1.25, plane="python"),
]}


def pick(labels: Sequence[str]) -> list[HashConfig]:
    unknown = [label for label in labels if label not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown configuration(s) {unknown}; known: {list(CONFIGS)}")
    return [CONFIGS[label] for label in labels]


def unique_rids(n: int, seed: int = 0) -> list[int]:
    """``n`` distinct six-digit request ids: an id that moves is counted once."""
    return random.Random(seed).sample(range(100000, 1000000), n)


def _fire_all(url: str, rids: Sequence[int], concurrency: int, progress: RunProgress,
              note: str) -> pd.DataFrame:
    """One GET per id; every request must succeed; the run reported on the terminal."""
    df = fire(url, list(rids), concurrency=concurrency)
    failed = df[df.status != 200]
    if len(failed):
        raise RuntimeError(f"{len(failed)} of {len(df)} requests failed at {url}: "
                           f"{failed.head(3).to_dict('records')}")
    progress.done(len(df), float(df.end.max() - df.start.min()), note)
    return df


def _served(url: str, rids: Sequence[int], concurrency: int, progress: RunProgress,
            note: str) -> dict[int, str]:
    """rid -> the replica that served it."""
    df = _fire_all(url, rids, concurrency, progress, note)
    return dict(zip(df.rid, df.server, strict=True))


def _moved(before: dict[int, str], after: dict[int, str]) -> float:
    return sum(before[rid] != after[rid] for rid in before) / len(before)


def _per_server(label: str, n: int, served: dict[int, str], names: Sequence[str]) -> list[dict[str, Any]]:
    return [{"config": label, "N": n, "server": server, "requests": count}
            for server, count in loads(served.values(), names).items()]


def grow(config: HashConfig, ns: Sequence[int] = range(2, 11), n_requests: int = 10000,
         concurrency: int = 64, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Requests per replica at every N, and the moves on each join and on one removal."""
    ns = sorted(ns)
    rids = unique_rids(n_requests, seed)
    per_server: list[dict[str, Any]] = []
    moves: list[dict[str, Any]] = []
    progress = RunProgress(config.label, len(ns) + 1)
    with lb_stack(ns[0], config) as balancer, httpx.Client(base_url=balancer.url,
                                                            timeout=60) as admin:
        before: dict[int, str] | None = None
        for n in ns:
            newcomers = grow_to(balancer, admin, n)
            served = _served(balancer.url, rids, concurrency, progress, f"N = {n}")
            per_server += _per_server(config.label, n, served, replicas(balancer))
            if before is not None:
                moves.append({"config": config.label, "event": "join", "N": n,
                              "moved": _moved(before, served), "ideal": len(newcomers) / n})
            before = served
        leaver = f"Server{(ns[-1] + 1) // 2}"
        admin.request("DELETE", "/rm", json={"n": 1, "hostnames": [leaver]}).raise_for_status()
        served = _served(balancer.url, rids, concurrency, progress, f"{leaver} left")
        assert before is not None
        moves.append({"config": config.label, "event": "leave", "N": ns[-1],
                      "moved": _moved(before, served), "ideal": 1 / ns[-1]})
    return pd.DataFrame(per_server), pd.DataFrame(moves)


def _first_choice(ring: HashRing, balance_factor: float | None) -> Callable[[int], str]:
    """The balancer's first choice for a request id: the owner, or under bounded loads the
    bounded walk's first replica, every replica holding six requests in flight."""
    if balance_factor is None:
        return ring.lookup
    inflight = InFlight()
    for name in ring.servers:
        for _ in range(6):
            inflight.take(name)
    return lambda rid: next(bounded_walk(ring, rid, inflight, balance_factor))


def _per_lookup_us(lookup: Callable[[int], str], rids: Sequence[int], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for rid in rids:
            lookup(rid)
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best / len(rids)


def lookup_costs(configs: Sequence[HashConfig], n: int = 10, lookups: int = 20000,
                 seed: int = 0) -> pd.DataFrame:
    """Per configuration with ``n`` servers: µs per lookup (bounded loads: the bounded walk's
    first choice, with every server holding the same requests in flight), ms to rebuild when a
    server joins, and the KiB the structure holds (tracemalloc, while it is built)."""
    names = [f"Server{i}" for i in range(1, n + 1)]
    rids = unique_rids(lookups, seed)
    rows = []
    for config in configs:
        tracemalloc.start()
        try:
            ring = config.ring(names)
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        t0 = time.perf_counter()
        ring.add("Server58127")
        rebuild_ms = 1000 * (time.perf_counter() - t0)
        ring.remove("Server58127")
        rows.append({"config": config.label,
                     "lookup_us": _per_lookup_us(_first_choice(ring, config.balance_factor), rids),
                     "rebuild_ms": rebuild_ms, "memory_kib": held / 1024})
    return pd.DataFrame(rows)


def throughput(configs: Sequence[HashConfig], n: int = 5, seconds: float = 3.0,
               connections: int = 48, rounds: int = 2) -> pd.DataFrame:
    """Requests/s through each configuration's balancer, and through HAProxy (plain ring) in
    front of the first one's replicas: one row per target and round."""
    rows = []
    with contextlib.ExitStack() as stack:
        balancers = [stack.enter_context(lb_stack(n, config)) for config in configs]
        targets = {config.label: f"{balancer.url}/home"
                   for config, balancer in zip(configs, balancers, strict=True)}
        reference = stack.enter_context(HAProxy(balancers[0].replica_ports(),
                                                [HAProxyBackend("plain")]))
        targets["HAProxy (ring)"] = f"{reference.urls['plain']}/home"
        for url in targets.values():
            wrk([url], 1, connections)  # warm-up: connections, caches
        progress = RunProgress("throughput", rounds * len(targets))
        for k in range(1, rounds + 1):
            order = list(targets.items())
            if k % 2 == 0:
                order.reverse()
            for label, url in order:
                result = wrk([url], seconds, connections)
                progress.done(result.rps * seconds, seconds, label)
                rows.append({"config": label, "round": k, "rps": result.rps,
                             "p99_ms": result.p99_ms, "errors": result.errors})
    return pd.DataFrame(rows)


def hot_rids(n: int, seed: int = 0, keys: int = 1000, skew: float = 1.1) -> list[int]:
    """``n`` request ids drawn from ``keys`` distinct ids with Zipf weights (1 / rank^skew): a
    few hot ids take a large share, as a popular object does. Hashing keeps each id on one
    replica, so only a bound can spread a hot id's load."""
    rng = random.Random(seed)
    ids = rng.sample(range(100000, 1000000), keys)
    return rng.choices(ids, [1 / rank ** skew for rank in range(1, keys + 1)], k=n)


# Request-id workloads of the side-by-side, by name.
WORKLOADS: dict[str, Callable[[int, int], list[int]]] = {"uniform ids": unique_rids,
                                                         "hot ids": hot_rids}


def haproxy_side_by_side(n: int = 5, n_requests: int = 10000, concurrency: int = 64,
                         seed: int = 0, hashes: str = "blake2b", balance_factor: float = 1.25,
                         workloads: Sequence[str] = tuple(WORKLOADS)) -> pd.DataFrame:
    """Requests per replica through our balancer and through HAProxy's consistent hashing
    (``hash-type consistent``), each with and without bounded loads, the same request ids, for
    each workload. HAProxy runs in front of the replicas of our bounded balancer; our unbounded
    one has replicas of its own with the same names (its routing depends on the names only).
    Each side hashes with its own function (ours: ``hashes``; HAProxy: its default, sdbm),
    both with 16 points per replica."""
    percent = round(100 * balance_factor)
    # 16 points per replica on the ring, as HAProxy's (BE_WEIGHT_SCALE x weight 1)
    plain_config = HashConfig("ours", hashes, vnodes=16, slots=4096, plane="python")
    bounded_config = HashConfig(f"ours c={balance_factor:g}", hashes, vnodes=16, slots=4096,
                                balance_factor=balance_factor, plane="python")
    rows: list[dict[str, Any]] = []
    with lb_stack(n, plain_config) as plain, lb_stack(n, bounded_config) as bounded:
        names = replicas(bounded)
        backends = [HAProxyBackend("plain"), HAProxyBackend("bounded", percent)]
        with HAProxy(bounded.replica_ports(), backends) as haproxy:
            targets = [("ours", False, plain.url), (bounded_config.label, True, bounded.url),
                       ("HAProxy", False, haproxy.urls["plain"]),
                       (f"HAProxy factor {percent}", True, haproxy.urls["bounded"])]
            progress = RunProgress("against HAProxy", len(workloads) * len(targets))
            for workload in workloads:
                rids = WORKLOADS[workload](n_requests, seed)
                for label, is_bounded, url in targets:
                    counts = Counter(_fire_all(url, rids, concurrency, progress,
                                               f"{workload}, {label}").server)
                    rows += [{"workload": workload, "target": label, "bounded": is_bounded,
                              "balancer": label.split()[0], "server": server,
                              "requests": counts.get(server, 0)} for server in names]
    return pd.DataFrame(rows)


def _listing(values: pd.Series, fmt: str) -> str:
    return ", ".join(f"{label} {fmt.format(v)}" for label, v in values.items())


def observations(balance: pd.DataFrame, moves: pd.DataFrame, costs: pd.DataFrame,
                 speed: pd.DataFrame, side_by_side: pd.DataFrame) -> str:
    """The findings as Markdown, a paragraph per measurement, each sentence written only when
    the numbers show it.

    ``balance`` is ``lb.balance_table`` of ``grow``'s requests per replica; the others are
    what ``grow``, ``lookup_costs``, ``throughput`` and ``haproxy_side_by_side`` return."""
    worst = balance.groupby("config", sort=False).max_over_mean.max()
    return "\n\n".join([balance_paragraph(balance), disruption_paragraph(moves),
                         cost_paragraph(costs), throughput_paragraph(speed, worst),
                         haproxy_paragraph(side_by_side)])


SEED, K9, K100 = "ring seed", "ring K9", "ring K100"


def balance_paragraph(balance: pd.DataFrame) -> str:
    top = balance.N.max()
    at_top = balance[balance.N == top].set_index("config").max_over_mean.sort_values()
    worst = balance.groupby("config", sort=False).max_over_mean.max()
    out = [f"**Balance.** At N = {top} the busiest replica carried, against the mean: "
           f"{_listing(at_top, '{:.2f}×')}."]
    if SEED in worst and K9 in worst and worst[SEED] > 1.5 * worst[K9]:
        out.append(f"The seed's hash, not the ring, makes the skew: the same ring with BLAKE2b "
                   f"is at worst {worst[K9]:.2f}× over N = {balance.N.min()}..{top}, the seed's "
                   f"hash {worst[SEED]:.2f}×.")
    if K9 in worst and K100 in worst:
        mean9 = balance[balance.config == K9].max_over_mean.mean()
        mean100 = balance[balance.config == K100].max_over_mean.mean()
        if mean100 < 0.9 * mean9:
            out.append(f"A hundred virtual servers per replica bring the ring from {mean9:.2f}× "
                       f"(K = 9, mean over N) to {mean100:.2f}×.")
        else:
            out.append(f"A hundred virtual servers did no better than nine here ({mean100:.2f}× "
                       f"against {mean9:.2f}×, mean over N).")
    for label in [c for c in worst.index if "bounded" in c]:
        if SEED in worst and worst[label] < worst[SEED]:
            out.append(f"Bounded loads cut the seed hash's worst from {worst[SEED]:.2f}× to "
                       f"{worst[label]:.2f}×.")
            if worst[label] > 1.25:
                out.append("The bound is on requests in flight, not on requests served, so a "
                           "replica can still serve more than c times the mean over a run.")
    return " ".join(out)


def disruption_paragraph(moves: pd.DataFrame) -> str:
    joins = moves[moves.event == "join"].assign(ratio=lambda d: d.moved / d.ideal)
    join_ratio = joins.groupby("config", sort=False).ratio.mean()
    near = join_ratio[(join_ratio >= 0.75) & (join_ratio <= 1.25)]
    classes = [(near, "about the newcomer's fair share of ids moved"),
               (join_ratio[join_ratio < 0.75], "less than that"),
               (join_ratio[join_ratio > 1.25], "more")]
    out = ["**Disruption.** When a replica joined, " + "; ".join(
        f"{what}: {_listing(part, '{:.2f}×')}"
        for part, what in classes if len(part)) + " (moved / fair share, mean over the joins)."]
    leaves = moves[moves.event == "leave"].set_index("config")
    if len(leaves):
        n = int(leaves.N.iloc[0])
        ratio = leaves.moved / leaves.ideal
        out.append(f"When the middle replica of {n} left, {_listing(leaves.moved, '{:.0%}')} of "
                   f"ids moved (its own share is about {1 / n:.0%}).")
        if "jump" in ratio and ratio["jump"] > 1.5:
            out.append(f"Jump moved {ratio['jump']:.1f}× that: it can drop only its last bucket, "
                       "so the last replica takes over the leaver's bucket and its own ids move "
                       "as well.")
    return " ".join(out)


def cost_paragraph(costs: pd.DataFrame) -> str:
    by_speed = costs.sort_values("lookup_us")
    fastest, slowest = by_speed.iloc[0], by_speed.iloc[-1]
    biggest = costs.sort_values("memory_kib").iloc[-1]
    return (f"**Cost.** A lookup took {fastest.lookup_us:.1f} µs ({fastest.config}) to "
            f"{slowest.lookup_us:.1f} µs ({slowest.config}) in Python; {biggest.config} "
            f"holds the most, {biggest.memory_kib:,.0f} KiB, and took "
            f"{biggest.rebuild_ms:.3g} ms to rebuild when a replica joined.")


def throughput_paragraph(speed: pd.DataFrame, worst: pd.Series) -> str:
    """``worst``: each configuration's worst busiest / mean, to say whether the slowest is
    also the most skewed."""
    rps = speed.groupby("config", sort=False).rps
    median = rps.median()
    ours = median.drop("HAProxy (ring)", errors="ignore")
    rounds_spread = ((rps.max() - rps.min()) / median).drop("HAProxy (ring)", errors="ignore")
    spread = (ours.max() - ours.min()) / ours.median()
    sentence = (f"**Throughput** (wrk, median of rounds): {ours.min():,.0f} to {ours.max():,.0f} "
                f"requests/s through the balancer")
    if "HAProxy (ring)" in median:
        sentence += f", HAProxy {median['HAProxy (ring)']:,.0f}"
    sentence += "."
    if len(ours) > 1 and spread <= max(0.1, 2 * rounds_spread.mean()):
        sentence += (f" The algorithm is lost in the proxy's own cost: the configurations differ "
                     f"by {spread:.0%}, rounds of one configuration by {rounds_spread.mean():.0%}.")
    elif len(ours) > 1:
        slowest_label = str(ours.idxmin())
        sentence += (f" The slowest, {slowest_label}, served {1 - ours.min() / ours.max():.0%} "
                     f"less than the fastest, {ours.idxmax()}")
        if slowest_label in worst and worst.idxmax() == slowest_label:
            sentence += (f", and it is the most skewed (busiest replica up to "
                         f"{worst[slowest_label]:.2f}× the mean)")
        sentence += "."
    errors = int(speed.errors.sum())
    if errors:
        sentence += f" wrk counted {errors} errors."
    return sentence


def haproxy_paragraph(side_by_side: pd.DataFrame) -> str:
    grouped = side_by_side.groupby(["workload", "target"], sort=False).requests
    share = grouped.max() / grouped.mean()
    parts = [f"{workload}: {_listing(share[workload], '{:.2f}×')}"
             for workload in side_by_side.workload.unique()]
    out = ["**Against HAProxy**, same replicas and request ids, busiest / mean: "
           + "; ".join(parts) + "."]
    for workload in side_by_side.workload.unique():
        pairs = []
        for balancer in ("ours", "HAProxy"):
            rows = side_by_side[(side_by_side.workload == workload)
                                & (side_by_side.balancer == balancer)]
            plain = rows[~rows.bounded].target.unique()
            capped = rows[rows.bounded].target.unique()
            if len(plain) and len(capped):
                before, after = share[workload][plain[0]], share[workload][capped[0]]
                if after < before - 0.05:
                    pairs.append(f"{balancer} from {before:.2f}× to {after:.2f}×")
        if pairs:
            out.append(f"With {workload}, the bound cut the busiest replica's share: "
                       f"{' and '.join(pairs)}.")
    return " ".join(out)
