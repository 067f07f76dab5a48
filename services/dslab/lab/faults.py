"""Part 2 A-5: the stack under a nemesis, checked like Jepsen checks it; and what linearizable
reads cost. Runs return ``FaultRun``s (``dslab.faults.run``); the tables, the timeline chart
and the sentences of the notebook are computed here from them.

    schedule       the A-5 nemesis schedule, scaled (kill, pause, partition, lossy, shard loss,
                   a power loss with writes in flight)
    under_faults   one run per read consistency: the schedule, then a power loss
    cost           each read consistency without faults: reads/s and p99 of each kind
    timeline       operations per second by outcome; events: the faults and their effect
    anomalies      what the checker found (not linearizable, or undecided), each placed in the
                   fault window it fell in, or in none
    shard_back     how long the lost shard took to serve again, and where the time went
    observations   the findings, every number from the runs
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..db.seed import shard_of
from ..faults.checks import Report
from ..faults.history import Kind, Outcome
from ..faults.nemesis import FaultEvent, Step
from ..faults.run import FaultRun, fault_stack, run_faults
from .anomalyplot import plot_anomaly
from .progress import RunProgress

__all__ = ["anomalies", "anomalies_markdown", "cost", "effect", "events", "observations",
           "plot_anomalies", "plot_timeline", "schedule", "shard_back", "timeline",
           "under_faults", "window_of"]

HEARTBEATS = ("--heartbeat-interval", "0.25", "--heartbeat-timeout", "1.0",
              "--heartbeat-misses", "3")
DETECTION = 3 * (0.25 + 1.0)  # misses x (interval + timeout): a hung server found within it
FAULT_COLORS = {"kill": "#d62728", "pause": "#9467bd", "partition": "#8c564b",
                "lossy": "#e377c2", "shard_loss": "#ff7f0e", "power_loss": "#7f7f7f"}


RESTART = 12.0  # a power loss's restart of the whole stack: 6 s here, 11 s on a busy day


def schedule(scale: float = 1.0, packet_faults: bool = True) -> tuple[list[Step], float]:
    """(the steps, the run's length): one server SIGKILLed; one paused and one cut off, each
    for twice the time to find a hung server; a lossy link; a whole shard lost; the whole
    stack's power lost with writes in flight, the clients running on after its restart.
    ``packet_faults=False`` leaves out the cut and the lossy link (they need iptables, as
    root: ``iptables.why_not``), and keeps the others at their times."""
    hang = 2 * DETECTION * scale
    steps = [Step(6 * scale, "kill"),
             Step(14 * scale, "pause", hang),
             Step(30 * scale, "partition", hang),
             Step(46 * scale, "lossy", 6 * scale, share=0.3),
             Step(58 * scale, "shard_loss", target="sh2"),
             Step(64 * scale, "power_loss")]
    if not packet_faults:
        steps = [s for s in steps if s.kind not in PACKET_FAULTS]
    return steps, 70 * scale + RESTART


PACKET_FAULTS = ("partition", "lossy")


def under_faults(modes: Sequence[str], steps: Sequence[Step], seconds: float,
                 backend: str = "process", **workload: Any) -> dict[str, FaultRun]:
    """Per read consistency, a fresh stack through the schedule, then a power loss.
    ``backend``: "process", or "docker" (shard servers as containers)."""
    progress = RunProgress("A-5 under faults", len(modes), unit="operations")
    runs = {}
    for mode in modes:
        started = time.monotonic()
        with fault_stack(mode, *HEARTBEATS, backend=backend) as stack:
            runs[mode] = run_faults(stack, steps, seconds, power_loss=True,
                                    read_consistency=mode, **workload)
        progress.done(len(runs[mode].history), time.monotonic() - started, mode)
    return runs


def cost(modes: Sequence[str], seconds: float, backend: str = "process",
         **workload: Any) -> pd.DataFrame:
    """Per read consistency, no fault: reads/s, writes/s and p50/p99 latency (ms) of each."""
    progress = RunProgress("A-5 cost of linearizable reads", len(modes), unit="operations")
    rows = []
    for mode in modes:
        with fault_stack(mode, *HEARTBEATS, backend=backend) as stack:
            run = run_faults(stack, [], seconds, read_consistency=mode, **workload)
        ops = [op for op in run.history if op.outcome is Outcome.OK]
        progress.done(len(ops), seconds, mode)
        for kind, label in ((Kind.READ, "reads"), (None, "writes")):
            mine = [op for op in ops if (op.kind is Kind.READ) == (kind is Kind.READ)]
            latency = pd.Series([1000 * (op.end - op.start) for op in mine], dtype=float)
            rows.append({"read consistency": mode, "operation": label,
                         "per_s": len(mine) / seconds, "p50_ms": latency.quantile(0.5),
                         "p99_ms": latency.quantile(0.99), "anomalies": len(run.report.anomalies)})
    return pd.DataFrame(rows)


def timeline(runs: Mapping[str, FaultRun]) -> pd.DataFrame:
    """read consistency, second, outcome, operations that ended in that second."""
    rows = [{"read consistency": mode, "second": int(op.end), "outcome": op.outcome.value}
            for mode, run in runs.items() for op in run.history if op.end < run.seconds]
    frame = pd.DataFrame(rows)
    return (frame.groupby(["read consistency", "second", "outcome"]).size()
            .rename("operations").reset_index())


def effect(event: FaultEvent) -> str:
    """What a fault was seen to do, in words."""
    e = event.effect
    if "dropped" in e:
        return f"{e['dropped']:,} packets dropped"
    if e.get("processes") == 0:
        return "nothing: the server was gone"
    for key, verb in (("stopped", "stopped"), ("killed", "killed")):
        if key in e:
            return f"{e[key]} of {e['processes']} processes {verb}"
    return ""


def events(runs: Mapping[str, FaultRun]) -> pd.DataFrame:
    return pd.DataFrame([{"read consistency": mode, "fault": e.kind.replace("_", " "),
                          "target": e.target, "start_s": round(e.start, 1),
                          "end_s": None if e.end is None else round(e.end, 1),
                          "effect": effect(e)}
                         for mode, run in runs.items() for e in run.events],
                        columns=["read consistency", "fault", "target", "start_s", "end_s",
                                 "effect"])


def window_of(t: float, run: FaultRun) -> str:
    """The fault window that time ``t`` of the run falls in ("no fault" if none); a window
    runs from the fault's start to its end (an instant one: for the time to find a dead
    server after it)."""
    for e in run.events:
        end = e.end if e.end is not None and e.end > e.start else e.start + DETECTION
        if e.start <= t <= end:
            return f"during the {e.kind.replace('_', ' ')} of {e.target}"
    return "outside every fault window"


COLUMNS = ["read consistency", "checked", "key", "verdict", "when", "what the checker shows"]


def anomalies(runs: Mapping[str, FaultRun]) -> pd.DataFrame:
    """One row per anomaly found (a key, the fault window its operation fell in, and the
    operations that show it), and one per register the checker could not decide."""
    rows = []
    for mode, run in runs.items():
        for when, report in (("after the faults", run.report),
                             ("after the power loss", run.after_power_loss)):
            if report is None:
                continue
            shown: set[int] = set()
            if report is not run.report:  # found after the faults already: not shown twice
                shown = ({a.key for a in run.report.anomalies}
                         | {u.key for u in run.report.undecided})
            for a in report.anomalies:
                if a.key in shown:  # found after the faults already: the same operations
                    continue
                stuck = a.stuck_op
                rows.append({"read consistency": mode, "checked": when, "key": a.key,
                             "verdict": "not linearizable",
                             "when": "" if stuck is None else window_of(stuck.start, run),
                             "what the checker shows": a.explain()})
            for u in report.undecided:
                if u.key not in shown:
                    rows.append({"read consistency": mode, "checked": when, "key": u.key,
                                 "verdict": "undecided", "when": "",
                                 "what the checker shows": f"key {u.key}: undecided, the search "
                                 f"gave up after {u.states:,} states ({u.spent} budget spent): "
                                 "not passed"})
            rows += [{"read consistency": mode, "checked": when, "key": None,
                      "verdict": "rows", "when": "", "what the checker shows": text}
                     for text in _row_findings(report)]
    return pd.DataFrame(rows, columns=COLUMNS)


def _row_findings(report: Report) -> list[str]:
    found = []
    if report.lost:
        found.append(f"{len(report.lost)} acknowledged inserts lost")
    if report.refused:
        found.append(f"{len(report.refused)} refused inserts held all the same")
    if report.vanished:
        found.append(f"{len(report.vanished)} rows seen by the read-back before the power "
                     "loss and gone after it")
    if report.phantoms or report.altered:
        found.append(f"{len(report.phantoms)} phantom rows, {len(report.altered)} altered")
    return found


def anomalies_markdown(found: pd.DataFrame) -> str:
    """The anomalies for a reader: each with the operations that show it, verbatim. A
    register the checker could not decide is said so: it has not passed."""
    undecided = found[found["verdict"] == "undecided"]
    wrong = found[found["verdict"] != "undecided"]
    if found.empty:
        return ("The checker found **no anomaly** in any run and decided every register: "
                "nothing lost, nothing phantom, every register linearizable, after the faults "
                "and after the power loss.")
    parts = []
    if wrong.empty:
        parts.append("The checker found **no anomaly**, but did not decide every register.")
    else:
        parts.append(f"The checker found **{len(wrong)} "
                     f"anomal{'y' if len(wrong) == 1 else 'ies'}**:")
    for r in wrong.to_dict("records"):
        where = f", {r['when']}" if r["when"] else ""
        parts.append(f"**{r['read consistency']}** reads, {r['checked']}{where}:\n\n```\n"
                     f"{r['what the checker shows']}\n```")
    if not undecided.empty:
        parts.append(f"**{len(undecided)} register{'s' if len(undecided) != 1 else ''} "
                     "undecided**: the search gave up within its budget, so "
                     f"{'it has' if len(undecided) == 1 else 'they have'} not passed: "
                     + "; ".join(f"key {r['key']} ({r['read consistency']} reads, "
                                 f"{r['checked']})" for r in undecided.to_dict("records")) + ".")
    return "\n\n".join(parts)


def plot_anomalies(runs: Mapping[str, FaultRun], most: int = 2) -> Figure | None:
    """The first ``most`` anomalies of each run, each key's operations around it drawn as
    Porcupine draws them; None when there is none."""
    shown = [(mode, a, run) for mode, run in runs.items()
             for a in run.report.anomalies[:most]]
    if not shown:
        return None
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, 2.6 * len(shown)), squeeze=False,
                             layout="constrained")
    for ax, (mode, a, run) in zip(axes[:, 0], shown):
        plot_anomaly(ax, a, run.history.ops)
        ax.set_title("")  # its own title, replaced by one that names the run
        ax.set_title(f"{mode} reads: {a.short()}", fontsize=8, loc="left", wrap=True)
    return fig


def plot_timeline(ax: Axes, frame: pd.DataFrame, run: FaultRun, title: str) -> None:
    """Operations per second by outcome, the faults as shaded spans."""
    wide = frame.pivot_table(index="second", columns="outcome", values="operations",
                             fill_value=0).reindex(range(int(run.seconds)), fill_value=0)
    for outcome, color in (("ok", "#2ca02c"), ("fail", "#1f77b4"), ("unknown", "#d62728")):
        if outcome in wide:
            ax.plot(wide.index, wide[outcome], color=color, label=f"{outcome} per second")
    for e in run.events:
        if e.start > run.seconds:  # the power loss, after the run: reported on its own
            continue
        end = e.end if e.end is not None and e.end > e.start + 0.3 else e.start + 0.3
        ax.axvspan(e.start, end, color=FAULT_COLORS.get(e.kind, "grey"), alpha=0.25)
        ax.text(e.start, ax.get_ylim()[1] * 0.97, e.kind.replace("_", " "), fontsize=8,
                rotation=90, va="top", ha="right")
    ax.set(title=title, xlabel="second of the run", ylabel="operations ended",
           xlim=(0, run.seconds))
    ax.legend(fontsize=8, loc="lower left")


def shard_back(run: FaultRun) -> dict[str, float] | None:
    """The lost shard: seconds from the loss to the end of the first operation on it that
    began after the loss and succeeded, and the balancer's own phases (from /metrics)."""
    loss = next((e for e in run.events if e.kind == "shard_loss"), None)
    if loss is None:
        return None
    # begun once the kill was done (the event ends then): one begun between the nemesis's
    # decision and its signals may still have been served by the servers about to die
    done = loss.start if loss.end is None else loss.end
    ok = [op for op in run.history if shard_of(op.key) == loss.target
          and op.outcome is Outcome.OK and op.start > done]
    if not ok:
        return {"back_s": math.inf}
    back = min(op.end for op in ok) - loss.start
    phases = {phase: total / count for phase, (count, total) in run.revival.items() if count}
    return {"back_s": back, "restart_s": phases.get("restart", math.nan),
            "serving_s": phases.get("serving", math.nan)}


def _shard_back_sentence(back: dict[str, float] | None) -> str:
    if back is None or not math.isfinite(back["back_s"]):
        return ""
    if math.isnan(back["serving_s"]):  # /metrics counted no restart in place
        return (f" The lost shard served again {back['back_s']:.1f} s after its servers died, "
                "with no restart in place: a server of it that the nemesis did not reach "
                "(one joining it as the others died) still held it.")
    return (f" The lost shard served again {back['back_s']:.1f} s after its servers died: "
            f"{back['serving_s']:.1f} s of it from the start of the restart in place (the "
            f"first server back after {back['restart_s']:.1f} s), the rest finding them dead "
            "and settling.")


def _windows_sentence(run: FaultRun) -> str:
    """Where the anomalies fell: inside fault windows, or outside every one."""
    places = [window_of(op.start, run) for a in run.report.anomalies
              if (op := a.stuck_op) is not None]
    outside = sum(p == "outside every fault window" for p in places)
    inside = len(places) - outside
    if not places:
        return ""
    if inside == 0:
        return (f"{'It' if outside == 1 else f'All {outside}'} fell outside every fault window: "
                "these reads go back in time with or without faults.")
    if outside == 0:
        return (f"{'It' if inside == 1 else f'All {inside}'} fell inside a fault window.")
    return (f"{inside} fell inside a fault window and {outside} outside every one: these reads "
            "go back in time with or without faults.")


def _failed(run: FaultRun) -> tuple[int, int]:
    """(operations not acknowledged, operations) of a run."""
    return sum(op.outcome is not Outcome.OK for op in run.history), len(run.history)


def observations(runs: Mapping[str, FaultRun], costs: pd.DataFrame) -> str:
    parts = []
    for mode, run in runs.items():
        failed, total = _failed(run)
        found = len(run.report.anomalies)
        undecided = len(run.report.undecided)
        lost = len(run.report.lost) + (len(run.after_power_loss.lost)
                                       if run.after_power_loss else 0)
        phantom = len(run.report.phantoms) + len(run.report.altered)
        sentence = (f"With **{mode}** reads, {total:,} operations in {run.seconds:g} s, "
                    f"{failed:,} of them not acknowledged ({failed / total:.1%}); the checker "
                    f"found {found} register{'s' if found != 1 else ''} of "
                    f"{run.report.registers_checked} that {'is' if found == 1 else 'are'} "
                    "not linearizable")
        if undecided:
            sentence += (f", and could not decide {undecided} (not passed: the search gave up "
                         "within its budget)")
        sentence += (f", {lost} acknowledged insert{'s' if lost != 1 else ''} lost and "
                     f"{phantom} row{'s' if phantom != 1 else ''} nobody wrote.")
        if run.report.anomalies:
            sentence += (" For example " + run.report.anomalies[0].short() + " (each one is "
                         "shown above with the operations that show it).")
            sentence += " " + _windows_sentence(run)
        if run.after_power_loss is not None:
            after = run.after_power_loss
            before_keys = {a.key for a in run.report.anomalies}
            new = [a for a in after.anomalies if a.key not in before_keys]
            sentence += (f" After the power loss the stack came back with "
                         f"{len(run.held_after_power_loss):,} rows: "
                         + ("every acknowledged insert was there" if not after.lost else
                            f"{len(after.lost)} acknowledged inserts were missing")
                         + (", and every register held a value its history allows."
                            if not new else f", and {len(new)} registers held a value their "
                            "history does not allow."))
        sentence += _shard_back_sentence(shard_back(run))
        parts.append(sentence)
    if set(costs["read consistency"]) >= {"any", "linearizable"}:
        c = {(str(r["read consistency"]), str(r["operation"])): (float(r["per_s"]),
                                                                 float(r["p99_ms"]))
             for r in costs.to_dict("records")}
        (lin, lin99), (fast, fast99) = c["linearizable", "reads"], c["any", "reads"]
        wlin, wfast = c["linearizable", "writes"][0], c["any", "writes"][0]
        parts.append(
            f"Without faults, under the same mix of reads and writes, linearizable reads "
            f"served {lin:,.0f} reads/s against {fast:,.0f} with any ({lin / fast:.2f}×), "
            f"p99 {lin99:.0f} ms against {fast99:.0f} ms; writes {wlin:,.0f}/s against "
            f"{wfast:,.0f}/s.")
        seen = {str(r["read consistency"]): int(r["anomalies"])
                for r in costs.to_dict("records") if "anomalies" in r}
        if seen:
            parts.append("In those runs without faults the checker found "
                         + " and ".join(f"{n} non-linearizable register{'s' if n != 1 else ''} "
                                        f"with {mode} reads" for mode, n in seen.items()) + ".")
    return " ".join(["**Observations.**", *parts])
