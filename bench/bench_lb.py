"""Benchmark: the balancer vs HAProxy vs the replicas directly, with wrk, in one run.

Balancers are started with ``--workers 1`` and ``--workers W`` (W: the cores this machine
gives, unless ``--workers`` says), on each plane (``--plane``: the Python plane, the native
one, or both), each with its own N replicas; beside them, HAProxy with 1 and W threads
(``nbthread``) in front of *the first balancer's replica processes* (found through their
environment), ``balance hdr(X-Request-ID)`` and ``hash-type consistent``. The balancers get
``--vnodes 32`` (see ``--vnodes``), so that the replicas' shares are near even, as HAProxy's. wrk sends
GET /home with a random X-Request-ID per request. The targets are measured in alternation,
``--rounds`` times, so drift of this noisy machine hits all of them.

Prints, per target (median over rounds): requests/s, p99, and for the balancers and HAProxy
the CPU each used per request (its processes' CPU time from /proc over the requests wrk
counted), then each balancer's throughput over HAProxy's (same W) and over direct.

Then the balancer as the bottleneck: each balancer's own processes (not its replicas) are put
in a cgroup with a CPU quota of ``--caps`` cores in turn, and wrk measures it again:
throughput should follow the cores a balancer is given, up to what its workers can use.

The balancers' replicas get a heartbeat timeout of ``--heartbeat-timeout`` (2 s, where a
balancer's default is 0.5 s): on two cores under wrk a replica can miss two 0.5 s heartbeats
and be replaced, and the HAProxy and direct targets, which keep the replicas' ports from the
start, would then point at a port nobody listens on. The ports are checked after every round:
if a replica was replaced all the same, the run stops and says so.

``--profile`` also samples the one-process balancer with py-spy under load and prints the
functions it spends its time in. ``--compare PATH`` adds the balancers run from
another checkout (``PATH/services`` first on its ``PYTHONPATH``: ``git worktree add PATH REV``),
with one process and with W workers, each with its own replicas, measured in the same
alternation: before against after in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
from sampling import Sampler

from dslab.balancer import native
from dslab.common.runtime import usable_cores
from dslab.lab.baseline import HAProxy, HAProxyBackend, ToolMissing, WrkResult, require, wrk
from dslab.stack import BalancerProcess
from dslab.supervisor.cgroups import CgroupError, CpuGroups


@dataclass
class Measured:
    rps: float
    p99_ms: float
    errors: int
    cpu_us: float | None  # CPU per request of the target's own processes; None: direct


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def balancer_pids(balancer: BalancerProcess) -> list[int]:
    """The balancer's own processes: the primary and its workers, not its replicas."""
    return [balancer.pid, *(w.pid for w in balancer.worker_processes())]


def measure(urls: list[str], pids: list[int], seconds: int, connections: int) -> Measured:
    wrk(urls, 1, connections)  # warm-up
    before = cpu_seconds(pids)
    result: WrkResult = wrk(urls, seconds, connections)
    used = cpu_seconds(pids) - before
    requests = result.rps * seconds
    cpu_us = 1e6 * used / requests if pids and requests else None
    return Measured(result.rps, result.p99_ms, result.errors, cpu_us)


def capped_runs(balancers: dict[str, BalancerProcess], caps: list[float], seconds: int,
                connections: int) -> dict[tuple[str, float], float]:
    """requests/s of each balancer with its own processes capped at each of ``caps`` cores."""
    rates: dict[tuple[str, float], float] = {}
    for cap in caps:
        try:
            groups = CpuGroups(cap, f"dslab-bench-lb-{os.getpid()}-{cap:g}")
        except CgroupError as exc:
            print(f"capped runs skipped: {exc}")
            return rates
        try:
            for label, balancer in balancers.items():
                procs = groups.create(label.replace(" ", "-").replace("=", ""))
                for pid in balancer_pids(balancer):
                    procs.write_text(str(pid))
                res = measure([f"{balancer.url}/home"], [], seconds, connections)
                rates[(label, cap)] = res.rps
                print(f"capped at {cap:g} core(s), {label}: {res.rps:7.0f} req/s  "
                      f"p99 {res.p99_ms:7.2f} ms  errors {res.errors}", flush=True)
                root = groups.parent.parent / "cgroup.procs"  # back to the root group
                for pid in balancer_pids(balancer):
                    root.write_text(str(pid))
        finally:
            groups.close()
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--replicas", type=int, default=3)
    ap.add_argument("--workers", type=int, default=usable_cores(),
                    help="the second balancer's workers (the first has 1)")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--caps", default="0.05,0.1,0.25,1.0",
                    help="CPU quotas (cores) for the balancer-as-bottleneck runs; '' skips them")
    ap.add_argument("--hash", default="blake2b", help="balancer hash (HAProxy uses its own)")
    ap.add_argument("--vnodes", type=int, default=32,
                    help="the balancers' virtual servers per replica: 32 splits requests within "
                         "a point or two of even over 3 replicas; the assignment's 9 gives one "
                         "replica 40%% of them, and the run then measures the ring's evenness "
                         "more than the proxy")
    ap.add_argument("--compare", metavar="PATH", default="",
                    help="also a one-process balancer from the checkout at PATH (its services/)")
    ap.add_argument("--heartbeat-timeout", type=float, default=2.0,
                    help="the balancers' heartbeat timeout (s): see above")
    ap.add_argument("--plane", choices=("python", "native", "both"), default="both",
                    help="which balancers: the Python plane, the native one (--plane native, "
                         "with W threads), or both (the native one when it is installed)")
    ap.add_argument("--profile", action="store_true",
                    help="sample the balancer with py-spy under load; print where its time goes")
    args = ap.parse_args()
    try:
        require("wrk")
        require("haproxy")
    except ToolMissing as exc:
        sys.exit(str(exc))

    work = Path(tempfile.mkdtemp(prefix="bench-lb-"))
    counts = sorted({1, args.workers})
    common = ["-n", str(args.replicas), "--hash", args.hash, "--vnodes", str(args.vnodes),
              "--heartbeat-timeout", f"{args.heartbeat_timeout:g}"]
    planes = ["python", "native"] if args.plane == "both" else [args.plane]
    if "native" in planes and not native.available():
        if args.plane == "native":
            sys.exit("the native plane is not installed: make venv")
        planes.remove("native")
    labels = {"python": "lb", "native": "native"}
    # Keyed by label: "lb W=1" is the Python plane with one process, "native W=2" the
    # native plane with two threads.
    balancers = {f"{labels[plane]} W={w}": BalancerProcess(
        "dslab.balancer", args=[*common, "--workers", str(w), "--plane", plane])
        for plane in planes for w in counts}
    first = next(iter(balancers.values()))
    compared: dict[int, BalancerProcess] = {}
    if args.compare:
        tree = Path(args.compare).resolve() / "services"
        if not (tree / "dslab").is_dir():
            sys.exit(f"--compare: no services/dslab in {args.compare}")
        compared = {w: BalancerProcess("dslab.balancer",
                                       env={**os.environ, "PYTHONPATH": str(tree)},
                                       args=[*common, "--workers", str(w)]) for w in counts}
    try:
        for balancer in balancers.values():
            balancer.start()
        for balancer in compared.values():
            balancer.start()
        with contextlib.ExitStack() as stack:
            # HAProxy in front of the first balancer's replicas, with as many threads as W.
            haproxies = {w: stack.enter_context(HAProxy(
                first.replica_ports(), [HAProxyBackend("plain")], name_replica=False,
                threads=w)) for w in counts}
            targets: dict[str, tuple[list[str], list[int]]] = {
                "direct": ([f"http://127.0.0.1:{p}/home"
                            for p in first.replica_ports().values()], [])}
            for w in counts:
                targets[f"haproxy W={w}"] = ([f"{haproxies[w].urls['plain']}/home"],
                                             [haproxies[w].pid or 0])
            for label, balancer in balancers.items():
                targets[label] = ([f"{balancer.url}/home"], balancer_pids(balancer))
            for w, balancer in compared.items():
                targets[f"compared W={w}"] = ([f"{balancer.url}/home"], balancer_pids(balancer))
            print(f"{os.cpu_count()} cores, {usable_cores()} usable; {args.replicas} Tornado "
                  f"replicas per balancer; wrk {args.connections} connections, {args.seconds}s "
                  f"x {args.rounds} rounds per target", flush=True)
            results: dict[str, list[Measured]] = {k: [] for k in targets}
            ports = {label: b.replica_ports() for label, b in balancers.items()}
            for rnd in range(1, args.rounds + 1):
                for name, (urls, pids) in targets.items():
                    res = measure(urls, pids, args.seconds, args.connections)
                    results[name].append(res)
                    cpu = f"{res.cpu_us:6.0f} us/req" if res.cpu_us is not None else ""
                    print(f"round {rnd} {name:12s} {res.rps:7.0f} req/s  p99 {res.p99_ms:7.2f} ms"
                          f"  errors {res.errors}  {cpu}", flush=True)
                for label, balancer in balancers.items():
                    if balancer.replica_ports() != ports[label]:
                        sys.exit(f"a replica of the {label} balancer was replaced during round {rnd}"
                                 f" (its heartbeats timed out): the HAProxy and direct targets "
                                 f"no longer match it. Run again, with a longer "
                                 f"--heartbeat-timeout than {args.heartbeat_timeout:g} s.")
        med = {k: Measured(statistics.median(r.rps for r in v),
                           statistics.median(r.p99_ms for r in v), sum(r.errors for r in v),
                           statistics.median(r.cpu_us for r in v if r.cpu_us is not None)
                           if v[0].cpu_us is not None else None) for k, v in results.items()}
        print("\nmedian          req/s   p99 ms  errors   CPU per request")
        for name, m in med.items():
            cpu = f"{m.cpu_us:6.0f} us" if m.cpu_us is not None else ""
            print(f"{name:12s} {m.rps:9.0f} {m.p99_ms:8.2f} {m.errors:7d}   {cpu}")
        print()
        for label in balancers:
            w = label.partition("W=")[2]
            lb, ha = med[label], med[f"haproxy W={w}"]
            cpu_ratio = (f"   CPU per request /haproxy = {lb.cpu_us / ha.cpu_us:.2f}"
                         if lb.cpu_us and ha.cpu_us else "")
            print(f"{label:10s}: /haproxy = {lb.rps / ha.rps:.2f}   /direct = "
                  f"{lb.rps / med['direct'].rps:.2f}{cpu_ratio}")
        for w in compared:
            lb, other = med[f"{labels[planes[0]]} W={w}"], med[f"compared W={w}"]
            print(f"this checkout / {args.compare} (W={w}): requests/s {lb.rps / other.rps:.2f}"
                  f", CPU per request {(lb.cpu_us or 0) / (other.cpu_us or 1):.2f}")
        caps = [float(c) for c in args.caps.split(",") if c.strip()]
        if caps:
            print("\nthe balancer as the bottleneck (its own processes capped, replicas not):")
            rates = capped_runs(balancers, caps, args.seconds, args.connections)
            for label in balancers:
                line = [f"{rates[(label, c)]:.0f} at {c:g}" for c in caps
                        if (label, c) in rates]
                if len(line) > 1:
                    grown = rates[(label, caps[-1])] / rates[(label, caps[0])]
                    print(f"{label}: {', '.join(line)} core(s): x{grown:.2f} from "
                          f"{caps[0]:g} to {caps[-1]:g}")
        if args.profile and "lb W=1" in balancers:
            with Sampler({"balancer profile (W=1)": balancers["lb W=1"].pid}, args.seconds,
                         work) as sampler:
                wrk(targets["lb W=1"][0], args.seconds, args.connections)
            sampler.print_top(15)
    finally:
        for balancer in [*balancers.values(), *compared.values()]:
            balancer.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
