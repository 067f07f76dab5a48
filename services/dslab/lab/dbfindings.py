"""What the Part 2 speed runs show, as text computed from their tables (pure).

    busiest_share  the busiest server's share of a workload's work, for a configuration
    describe       a configuration read back from /status, in a line
    observations   the findings: rates per world, variant against base with what the model
                   predicts where servers have a capacity, where the CPU went; a sentence that
                   states an effect only when the numbers show it
    refill         A-4: the endpoint tour and a shard server killed and refilled

Tables are ``db.speed_table`` (world, config, repeat, kind, per_s, ..., failed) and
``db.cpu_table`` (world, config, repeat, kind, balancer, metadata engine, client, servers,
busiest server, busiest of cap).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from .shares import busiest, read_shares, shard_weights, write_shares

__all__ = ["KINDS", "UNCAPPED", "busiest_share", "describe", "observations", "refill"]

UNCAPPED = "uncapped"

# kind -> (what it is in a sentence, its unit)
KINDS: dict[str, tuple[str, str]] = {
    "write": ("writes", "rows/s"),
    "read": ("reads anywhere", "reads/s"),
    "hot read": ("reads of one hot shard", "reads/s"),
}


def hot_shard(configured: Mapping[str, Any]) -> str:
    """The shard the hot reads go to: the one with the lowest ids."""
    return str(min(configured["shards"], key=lambda s: s["Stud_id_low"])["Shard_id"])


def busiest_share(configured: Mapping[str, Any], kind: str) -> float:
    """The busiest server's share of ``kind``'s work in this configuration: rows it journals
    per row written, or its share of the reads."""
    hot = hot_shard(configured) if kind == "hot read" else None
    weights = shard_weights(configured["shards"], hot)
    servers = configured["servers"]
    return busiest(write_shares(servers, weights) if kind == "write"
                   else read_shares(servers, weights))


def _skew_sentence(configured: Mapping[str, Any], label: str) -> str:
    """Whether the shards' rings give the busiest server more reads than an even split over
    each shard's replicas would (empty when within 20% of it)."""
    weights = shard_weights(configured["shards"])
    servers = configured["servers"]
    share = busiest(read_shares(servers, weights))
    even = busiest(read_shares(servers, weights, lambda h, _shard: {n: 1 / len(h) for n in h}))
    if share <= 1.2 * even:
        return ""
    return (f"In {label} the busiest server takes {share:.0%} of the reads anywhere where an "
            f"even split over each shard's replicas would give it {even:.0%}: the shards' "
            "rings, not the servers, limit what more replicas add.")


def describe(configured: Mapping[str, Any]) -> str:
    shards = [s["Shard_id"] for s in configured["shards"]]
    copies = {s: sum(s in held for held in configured["servers"].values()) for s in shards}
    return (f"N = {configured['N']} servers, {len(shards)} shards, "
            f"replicas per shard {sorted(set(copies.values()))}")


def _ratio_phrase(ratio: float) -> str:
    if ratio >= 1.15:
        return "grew"
    if ratio <= 0.87:
        return "fell"
    return "hardly changed"


def _agreement(ratio: float, predicted: float) -> str:
    same, close = _ratio_phrase(ratio) == _ratio_phrase(predicted), abs(ratio / predicted - 1) < 0.25
    if same and close:
        return " as predicted"
    if same:
        return " in the predicted direction, not by the predicted amount"
    if close:
        return f", near the predicted {predicted:.2f}×"
    return f" where the model predicted it {_ratio_phrase(predicted)}"


def _spread(table: pd.DataFrame) -> float:
    groups = table.groupby(["world", "config", "kind"], sort=False).per_s
    return float(((groups.max() - groups.min()) / groups.mean()).max())


def _cpu_sentence(world: str, cpu: pd.DataFrame, cores: int) -> str:
    if world == UNCAPPED:
        total = (cpu[["balancer", "metadata engine", "client", "servers"]].sum(axis=1)).median()
        if total >= 0.8 * cores:
            return (f"Uncapped, the stack and its clients kept a median {total:.1f} of the "
                    f"machine's {cores} cores busy: every server draws on the same cores, so "
                    "one more server adds contention, not capacity.")
        return f"Uncapped, the stack and its clients used a median {total:.1f} of {cores} cores."
    at_cap = cpu["busiest of cap"].min()
    balancer, client = cpu.balancer.max(), cpu.client.max()
    head = (f"{world.capitalize()}, the busiest server used {at_cap:.0%} or more of its quota "
            f"in every phase, while the balancer used at most {balancer:.0%} of a core and the "
            f"clients {client:.0%}")
    if at_cap >= 0.85 and balancer + client < 0.5:
        return head + ": the servers, not the balancer, set the pace."
    return head + "."


def observations(table: pd.DataFrame, cpu: pd.DataFrame,
                 configured: Mapping[str, Mapping[str, Any]], base: str,
                 variant: str | None = None, cores: int = 2) -> str:
    """The findings of one experiment: ``base`` alone (A-1) or ``variant`` against ``base``,
    in every world the runs cover."""
    mean = table.groupby(["world", "config", "kind"], sort=False).per_s.mean()
    kinds = [k for k in KINDS if k in set(table.kind)]
    out: list[str] = []
    for world in table.world.unique():
        capped = world != UNCAPPED
        label = str(world).capitalize()
        if variant is None:
            listing = "; ".join(f"{KINDS[k][0]} {mean[(world, base, k)]:,.0f} {KINDS[k][1]}"
                                for k in kinds)
            out.append(f"**{label}**, {base}: {listing}.")
            if capped and {"read", "hot read"} <= set(kinds):
                measured = mean[(world, base, "hot read")] / mean[(world, base, "read")]
                share = busiest_share(configured[base], "hot read")
                predicted = busiest_share(configured[base], "read") / share
                out.append(f"Reads of one shard ran at {measured:.2f}× the rate of reads "
                           f"anywhere: they can use only that shard's replicas (the busiest "
                           f"of them takes {share:.0%} of them; the model predicts "
                           f"{predicted:.2f}×).")
        else:
            parts, effects = [], []
            for k in kinds:
                ratio = mean[(world, variant, k)] / mean[(world, base, k)]
                text = (f"{KINDS[k][0]} {mean[(world, base, k)]:,.0f} → "
                        f"{mean[(world, variant, k)]:,.0f} {KINDS[k][1]} ({ratio:.2f}×")
                if capped:
                    predicted = (busiest_share(configured[base], k)
                                 / busiest_share(configured[variant], k))
                    text += f", predicted {predicted:.2f}×"
                    effects.append(f"{KINDS[k][0]} {_ratio_phrase(ratio)}"
                                   + _agreement(ratio, predicted))
                parts.append(text + ")")
            out.append(f"**{label}**, {base} → {variant}: {'; '.join(parts)}.")
            if effects:
                joined = "; ".join(effects)
                out.append(joined[0].upper() + joined[1:] + ".")
            if capped and "read" in kinds:
                out.append(_skew_sentence(configured[variant], variant))
        out.append(_cpu_sentence(str(world), cpu[cpu.world == world], cores))
    if capped_worlds := [w for w in table.world.unique() if w != UNCAPPED]:
        out.append("The prediction is the inverse ratio of the busiest server's share of the "
                   "work (per row written: the rows of every shard it holds; per read: its "
                   "share of its shards' rings), the point at which that server saturates "
                   f"({', '.join(map(str, capped_worlds))}).")
    out.append(f"Runs of one configuration differ by up to {_spread(table):.0%}. "
               f"Failed requests: {int(table.failed.sum())}.")
    return " ".join(sentence for sentence in out if sentence)


def _is_error_shape(text: str) -> bool:
    try:
        body = json.loads(text)
    except ValueError:
        return False
    return (isinstance(body, dict) and set(body) == {"message", "status"}
            and body["status"] == "failure" and str(body["message"]).startswith("<Error> "))


def refill(tour: pd.DataFrame, result: Mapping[str, Any]) -> str:
    """A-4: the endpoint tour (``db.db_tour``: status, response) and a kill and refill
    (``db.kill_and_refill``), in sentences that state only what the numbers show."""
    refused = tour[tour.status >= 400]
    out = [f"The tour made {len(tour)} requests: {int((tour.status == 200).sum())} succeeded and "
           f"{len(refused)} were refused"
           + (f" ({', '.join(map(str, sorted(set(refused.status))))})" if len(refused) else "")
           + "."]
    misshapen = [r for r in refused.response if not _is_error_shape(r)]
    if len(refused) and not misshapen:
        out.append("Every refusal is in the contract's error shape.")
    elif misshapen:
        out.append(f"**{len(misshapen)} refusal(s) are not in the contract's error shape**: "
                   f"{misshapen[0][:120]}")
    victim, newcomer = result["victim"], result["replacement"]
    same = sorted(result["replacement_shards"]) == sorted(result["victim_shards"])
    out.append(f"{victim} held {', '.join(result['victim_shards'])}; {result['seconds']:.1f} s "
               f"after its SIGKILL, /status listed **{newcomer}** "
               + ("with the same shards." if same else
                  f"with {', '.join(result['replacement_shards'])}: **not the same shards**."))
    before, after = result["before"], result["after"]
    old = before[before.server == victim].set_index("shard").rows
    new = after[after.server == newcomer].set_index("shard").rows
    held = [s for s in result["victim_shards"] if s in new.index]
    out.append(f"{newcomer} holds " + ", ".join(
        f"{int(new[s])} rows of {s} ({victim} had {int(old[s])})" for s in held) + ".")
    short = [s for s in held if new[s] != old[s]]
    if short:
        out.append(f"**The rows of {', '.join(short)} differ from what {victim} held.**")
    apart = sorted(s for s, rows in after.groupby("shard").rows if rows.nunique() > 1)
    if apart:
        out.append(f"**The replicas of {', '.join(apart)} hold different numbers of rows.**")
    else:
        out.append("Every replica of every shard holds the same number of rows.")
    return " ".join(out)
