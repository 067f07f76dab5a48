"""What the Part 1 runs show, as text computed from their numbers (pure).

Each function is given the numbers a notebook measured and returns Markdown; a sentence that
states an effect appears only when the numbers show it (``tests/test_lab_findings.py`` checks
both ways).

    machine       the cores every process of a run shares, in a sentence
    requests      A-1: successes, rate, the busiest replica's share, and whether the ring
                  explains a skew (the slots the request hash reaches, the busiest's arcs)
    spread        A-2: busiest / mean against N: does the spread fall as replicas are added
    kill          A-3: a replica SIGKILLed under load: recovery, retries, what clients saw
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

__all__ = ["EVEN", "SKEWED", "kill", "machine", "requests", "spread"]

# busiest / mean at or above which a split is called skewed; below EVEN, near even
SKEWED = 1.25
EVEN = 1.10


def machine(cores: int | None) -> str:
    """Every replica, the balancer and the clients share this machine's cores (uncapped)."""
    if not cores:
        return "The machine's core count is unknown here."
    return (f"This machine has **{cores} core{'s' if cores != 1 else ''}**: uncapped, every "
            "replica shares them with the balancer and the clients.")


def requests(*, succeeded: int, total: int, rate: float, p50_ms: float, p99_ms: float,
             busiest: str, served: int, n: int, slots_reached: int, slots: int,
             busiest_reached: int) -> str:
    """A-1. ``slots_reached``: distinct ring slots the run's request ids hash to;
    ``busiest_reached``: how many of those fall in the busiest replica's arcs."""
    out = [f"{succeeded:,} of {total:,} requests succeeded at {rate:,.0f} requests/s "
           f"(p50 {p50_ms:.1f} ms, p99 {p99_ms:.1f} ms)."]
    if succeeded < total:
        out.append(f"**{total - succeeded:,} failed.**")
    ratio = served / (total / n) if total else float("nan")
    out.append(f"{busiest} served {served / total:.0%} of them, where an even split is "
               f"{1 / n:.0%} (busiest / mean {ratio:.2f}).")
    if ratio >= SKEWED:
        reach = (f"the request ids hashed to only {slots_reached} of the ring's {slots} slots"
                 if slots_reached < slots / 2 else
                 f"the request ids hashed to {slots_reached} of the ring's {slots} slots")
        out.append(f"The split is skewed, and the ring shows why: {reach}, and "
                   f"{busiest_reached} of those ({busiest_reached / slots_reached:.0%}) lie on "
                   f"{busiest}'s arcs. The imbalance is the hash's, not the balancer's; A-4 "
                   "compares other hashes.")
    elif ratio < EVEN:
        out.append("The split is near even.")
    return " ".join(out)


def spread(table: pd.DataFrame) -> str:
    """A-2, from ``lb.balance_table`` (N, mean, min, max, max_over_mean per N)."""
    table = table.sort_values("N")
    first, last = table.iloc[0], table.iloc[-1]
    by_spread = table.sort_values("max_over_mean")
    best, worst = by_spread.iloc[0], by_spread.iloc[-1]
    m0, m1 = float(first.max_over_mean), float(last.max_over_mean)
    out = ["The average load per replica is requests / N by construction."]
    if len(table) > 1:
        if m1 <= m0 / EVEN:
            trend = "falls as replicas are added"
        elif m1 >= m0 * EVEN:
            trend = "grows as replicas are added"
        else:
            trend = "stays about the same as replicas are added"
        extremes = [(what, row) for what, row in (("worst", worst), ("best", best))
                    if int(row.N) not in (int(first.N), int(last.N))]  # else said already
        aside = "; ".join(f"{what} {float(row.max_over_mean):.2f}× at N = {int(row.N)}"
                          for what, row in extremes)
        out.append(f"The spread {trend}: the busiest replica carries {m0:.2f}× the average at "
                   f"N = {int(first.N)} and {m1:.2f}× at N = {int(last.N)}"
                   + (f" ({aside})" if aside else "") + ".")
    out.append(f"At N = {int(last.N)} the idlest replica got {int(last['min']):,} requests and "
               f"the busiest {int(last['max']):,}.")
    return " ".join(out)


def kill(events: Mapping[str, Any], seconds: float) -> str:
    """A-3, from ``lb.kill_under_load``'s events."""
    failed, total = int(events["failed"]), int(events["requests"])
    out = [f"{total:,} requests in {seconds:g} s; **{failed:,} failed**."]
    victim, killed_at = events["victim"], float(events["killed_at"])
    out.append(f"{victim} was killed at {killed_at:.2f} s.")
    replacement = events.get("replacement")
    if replacement is None:
        out.append("No replacement was listed in /rep before the run ended.")
    else:
        listed = float(events["listed_at"]) - killed_at
        served = events.get("recovery_s")
        out.append(f"Its replacement {replacement} was in /rep {listed:.2f} s later"
                   + (f" and served its first request {served:.2f} s after the kill."
                      if served is not None else ", and served no request before the run ended."))
    retries = int(events.get("retries", 0))
    if retries:
        out.append(f"The balancer answered {retries} request{'s' if retries != 1 else ''} from "
                   "another replica than the one the ring chose first (a retry after a failed "
                   "try).")
    if failed == 0:
        out.append("No client saw the failure.")
    else:
        statuses = events.get("failed_statuses", {})
        listing = ", ".join(f"{count} × {'no answer' if code == 0 else code}"
                            for code, count in sorted(statuses.items()))
        out.append(f"Clients saw the failure: {failed} request{'s' if failed != 1 else ''} "
                   f"failed{f' ({listing})' if listing else ''}.")
    return " ".join(out)
