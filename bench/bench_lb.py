"""Benchmark: the balancer vs HAProxy vs the replicas directly, with wrk, in one run.

One balancer (``python -m dslab.balancer``) is started with its N replicas; HAProxy is
configured in front of *those same replica processes* (found through their environment), with
``balance hdr(X-Request-ID)`` and ``hash-type consistent``, one thread, as our balancer is one
process. wrk sends GET /home with a random X-Request-ID per request. The three targets are
measured in alternation, ``--rounds`` times, so drift of this noisy machine hits all of them.

Prints requests/s and p99 latency of each (median over rounds) and the ratios lb/haproxy and
lb/direct. ``--profile`` also samples the balancer with py-spy under load and prints the
functions it spends its time in.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from sampling import Sampler

from dslab.lab.baseline import HAProxy, HAProxyBackend, ToolMissing, WrkResult, require, wrk
from dslab.stack import BalancerProcess


def profile_balancer(pid: int, urls: list[str], args: argparse.Namespace, work: Path) -> None:
    """py-spy under load; prints the hottest functions (own time) and their share."""
    with Sampler({"balancer profile": pid}, args.seconds, work) as sampler:
        wrk(urls, args.seconds, args.connections)
    sampler.print_top(15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--replicas", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hash", default="blake2b", help="balancer hash (HAProxy uses its own)")
    ap.add_argument("--profile", action="store_true",
                    help="sample the balancer with py-spy under load; print where its time goes")
    args = ap.parse_args()
    try:
        require("wrk")
        require("haproxy")
    except ToolMissing as exc:
        sys.exit(str(exc))

    work = Path(tempfile.mkdtemp(prefix="bench-lb-"))
    balancer = BalancerProcess("dslab.balancer", args=["-n", str(args.replicas), "--hash", args.hash])
    try:
        balancer.start()
        ports = balancer.replica_ports()
        assert len(ports) == args.replicas, ports
        with HAProxy(ports, [HAProxyBackend("plain")], name_replica=False) as haproxy:
            targets = {
                "direct": [f"http://127.0.0.1:{p}/home" for p in ports.values()],
                "haproxy": [f"{haproxy.urls['plain']}/home"],
                "lb": [f"{balancer.url}/home"],
            }
            print(f"{os.cpu_count()} cores; {args.replicas} Tornado replicas; wrk {args.connections} "
                  f"connections, {args.seconds}s x {args.rounds} rounds per target", flush=True)
            results: dict[str, list[WrkResult]] = {k: [] for k in targets}
            for rnd in range(1, args.rounds + 1):
                for name, urls in targets.items():
                    wrk(urls, 1, args.connections)  # warm-up
                    res = wrk(urls, args.seconds, args.connections)
                    results[name].append(res)
                    print(f"round {rnd} {name:8s} {res.rps:9.0f} req/s  p99 {res.p99_ms:7.2f} ms  "
                          f"errors {res.errors}", flush=True)
        med = {k: (statistics.median(r.rps for r in v), statistics.median(r.p99_ms for r in v),
                   sum(r.errors for r in v)) for k, v in results.items()}
        print("\nmedian       req/s     p99 ms   errors")
        for name, (rps, p99, err) in med.items():
            print(f"{name:8s} {rps:9.0f} {p99:10.2f} {err:8d}")
        print(f"\nlb/haproxy = {med['lb'][0] / med['haproxy'][0]:.2f}   "
              f"lb/direct = {med['lb'][0] / med['direct'][0]:.2f}   "
              f"haproxy/direct = {med['haproxy'][0] / med['direct'][0]:.2f}")
        if args.profile:
            profile_balancer(balancer.pid, targets["lb"], args, work)
    finally:
        balancer.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
