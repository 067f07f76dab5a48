"""Benchmark: the balancer's own Python per proxied request, in one process, with no network.

The front end (``common/front.py``), the proxy (``balancer/proxy.py``) and the upstream pool
(``keeper/upstream.py``) are driven request by request through stand-in transports that keep
what is written to them: a GET with a random X-Request-ID goes into the front's protocol, the
request the pool wrote to a replica is answered with the bytes a Part 1 replica sends, and
the answer the client gets is checked. The kernel's share and the event loop's, which
bench-lb measures with them, are left out: this is the part our code decides, steady enough to
compare two checkouts in one run (``--compare PATH``, as bench-lb's) and to profile.

``--workers-mode`` counts as a worker of ``--workers W`` > 1 does (the shared load table and
the workers' metrics files). Each checkout runs in its own child process; the rounds alternate
between them. Prints µs per request for each (median over rounds), the ratio, and with
``--profile`` the functions (cProfile) this checkout spends its time in.

Time on this machine varies by 20% from run to run. ``--instructions`` counts instead the
instructions each checkout executes per request (valgrind's callgrind: the same count for the
same code and inputs, whatever else the machine is doing; the difference between a run of
``--requests`` and one of twice as many, so start-up cancels out). It takes about a minute per
checkout.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
# What a Part 1 replica (Tornado) answers to GET /home, as read off one.
_BODY = b'{"message": "Hello from Server: Server1", "status": "successful"}'
REPLICA_ANSWER = (b'HTTP/1.1 200 OK\r\nServer: TornadoServer/6.6.1\r\nContent-Type: application/json'
                  b'\r\nDate: Thu, 03 Dec 2026 12:17:57 GMT\r\nEtag: "ca252688cd5b4f7db0f8808e2b4e41c1'
                  b'a3abf42c"\r\nContent-Length: %d\r\n\r\n%s' % (len(_BODY), _BODY))
REPLICAS = ["Server1", "Server2", "Server3"]


class KeptWrites:
    """A transport that keeps what is written to it (the stand-in for a socket)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        """A client on loopback (the front reads its address for X-Forwarded-For)."""
        return ("127.0.0.1", 40000) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0


def _metrics(inflight, shared: Path | None):
    """This checkout's ProxyMetrics, whichever signature it has."""
    from dslab.balancer import metrics
    if shared is None:
        return metrics.ProxyMetrics(inflight)
    if hasattr(metrics, "SharedFolder"):
        return metrics.ProxyMetrics(inflight, shared=metrics.SharedFolder(shared, 0, 2))
    return metrics.ProxyMetrics(inflight, shared_dir=shared)  # before the tally


def child(requests: int, shared: Path | None, profile: bool) -> None:
    import asyncio
    import random
    import time

    import tornado.web

    from dslab.balancer.main import build_parser
    from dslab.balancer.proxy import Proxy
    from dslab.balancer.sharedload import SharedInFlight, create_table
    from dslab.common.front import Front
    from dslab.keeper.bounded import InFlight
    from dslab.keeper.upstream import UpstreamPool, _Connection
    from dslab.ring import make_ring

    class Replicas:
        def __init__(self) -> None:
            args = build_parser().parse_args([])  # the balancer's defaults
            self.ring = make_ring(args.algorithm, args.hash, slots=args.slots, vnodes=args.vnodes)
            self.pools: dict[str, UpstreamPool] = {}
            self.sockets: list[tuple[_Connection, KeptWrites]] = []
            for name in REPLICAS:
                self.ring.add(name)
                pool = self.pools[name] = UpstreamPool("127.0.0.1", 1, coarse_timeout=True)
                conn, transport = _Connection(), KeptWrites()
                conn.connection_made(transport)  # type: ignore[arg-type]
                pool._idle.append(conn)  # one kept-alive connection, as under load
                self.sockets.append((conn, transport))

        def pool(self, name: str) -> UpstreamPool | None:
            return self.pools.get(name)

        def suspect(self, name: str, exc: Exception | None = None) -> None:
            raise AssertionError(f"{name} failed: {exc}")

        async def fetch(self, name: str, raw: bytes):
            raise AssertionError("no exchange may leave the hot path")

    async def run() -> None:
        replicas = Replicas()
        if shared is None:
            inflight = InFlight()
        else:
            create_table(shared / "inflight", 2)
            inflight = SharedInFlight(shared / "inflight", 2, 0)
            inflight.slots = {name: i for i, name in enumerate(REPLICAS, 1)}
        proxy = Proxy(replicas, inflight, _metrics(inflight, shared))
        front = Front(proxy.route, tornado.web.Application([]), max_body=1 << 20)
        protocol, client = front.protocol(), KeptWrites()
        protocol.connection_made(client)  # type: ignore[arg-type]
        rng = random.Random(1)
        gets = [b"GET /home HTTP/1.1\r\nHost: localhost:5000\r\nX-Request-ID: %d\r\n\r\n"
                % rng.randint(100000, 999999) for _ in range(1000)]

        def one(get: bytes) -> None:
            protocol.data_received(get)
            for conn, transport in replicas.sockets:
                if transport.written:
                    transport.written.clear()
                    conn.data_received(REPLICA_ANSWER)

        for get in gets:  # warm: every replica has an answer cell, every cache is filled
            one(get)
        assert len(client.written) == len(gets) and b" 200 OK" in client.written[0]
        client.written.clear()
        started = time.perf_counter()
        for i in range(requests):
            one(gets[i % len(gets)])
        elapsed = time.perf_counter() - started
        assert len(client.written) == requests, "a request went unanswered"
        print(elapsed / max(requests, 1) * 1e6)
        if profile:
            import cProfile
            import pstats
            profiler = cProfile.Profile()
            profiler.enable()
            for i in range(requests):
                one(gets[i % len(gets)])
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(20)

    asyncio.run(run())


def run_child(services: Path, requests: int, workers_mode: bool, *, profile: bool = False,
              under: list[str] = ()) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="bench-hotpath-") as shared:
        env = {**os.environ, "PYTHONPATH": str(services)}
        command = [*under, sys.executable, __file__, "--child", "--requests", str(requests)]
        if workers_mode:
            env["PROMETHEUS_MULTIPROC_DIR"] = shared  # as the primary gives its workers
            command += ["--shared", shared]
        if profile:
            command.append("--profile")
        return subprocess.run(command, env=env, check=True, capture_output=True, text=True)


def measure(services: Path, requests: int, workers_mode: bool) -> float:
    """µs per request."""
    return float(run_child(services, requests, workers_mode).stdout.split()[-1])


def instructions(services: Path, requests: int, workers_mode: bool) -> float:
    """Instructions per request, counted by callgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("--instructions needs valgrind: apt-get install valgrind")
    under = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    counted = []
    for n in (requests, 2 * requests):
        err = run_child(services, n, workers_mode, under=under).stderr
        counted.append(int(re.findall(r"Collected : (\d+)", err)[-1]))
    return (counted[1] - counted[0]) / requests


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=100_000, help="per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers-mode", action="store_true")
    p.add_argument("--compare", type=Path, help="another checkout, measured in the same run")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--instructions", action="store_true",
                   help="count instructions per request (valgrind) instead of timing")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shared", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.requests, args.shared, args.profile)
        return
    targets = {"this checkout": HERE / "services"}
    if args.compare is not None:
        targets[f"{args.compare}"] = args.compare.resolve() / "services"
    mode = "as a worker of several" if args.workers_mode else "one process"
    if args.instructions:
        requests = min(args.requests, 20_000)  # callgrind runs ~50x slower
        print(f"instructions per request (callgrind, {requests} requests), {mode}", flush=True)
        medians = {}
        for name, services in targets.items():
            medians[name] = instructions(services, requests, args.workers_mode)
            print(f"{name:>40}: {medians[name]:9.0f} instructions per request", flush=True)
    else:
        found: dict[str, list[float]] = {name: [] for name in targets}
        print(f"{args.requests} requests per round, {args.rounds} rounds, {mode}", flush=True)
        for round_number in range(1, args.rounds + 1):
            for name, services in targets.items():
                found[name].append(measure(services, args.requests, args.workers_mode))
            print(f"  round {round_number}: " + ", ".join(
                f"{name} {values[-1]:.2f} µs" for name, values in found.items()), flush=True)
        medians = {name: statistics.median(values) for name, values in found.items()}
        for name, median in medians.items():
            print(f"{name:>40}: {median:6.2f} µs per request (median)")
    if args.compare is not None:
        this, other = medians["this checkout"], medians[f"{args.compare}"]
        print(f"this checkout / {args.compare} = {this / other:.2f}")
    if args.profile:
        print(run_child(targets["this checkout"], args.requests, args.workers_mode,
                        profile=True).stderr)


if __name__ == "__main__":
    main()
