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
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
LUA = """
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/home", {["X-Request-ID"] = tostring(math.random(100000, 999999))})
end
"""


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, path: str = "/rep", timeout: float = 30.0) -> None:
    import urllib.request
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers on port {port}{path}") from None
            time.sleep(0.1)


def replica_ports(balancer_pid: int) -> dict[str, int]:
    """SERVER_ID -> listening port, for the balancer's replica processes."""
    ports: dict[str, int] = {}
    for child in psutil.Process(balancer_pid).children():
        name = child.environ().get("SERVER_ID")
        listening = [c.laddr.port for c in child.net_connections("tcp") if c.status == "LISTEN"]
        if name and listening:
            ports[name] = listening[0]
    return ports


def haproxy_config(port: int, replicas: dict[str, int]) -> str:
    servers = "\n".join(f"  server {name} 127.0.0.1:{p}" for name, p in sorted(replicas.items()))
    return f"""global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  balance hdr(X-Request-ID)
  hash-type consistent
  http-reuse always
{servers}
"""


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(urls: list[str], seconds: int, connections: int, script: Path) -> tuple[float, float, int]:
    """(requests/s summed over urls, worst p99 in ms, errors) of concurrent wrk runs."""
    per_url = max(1, connections // len(urls))
    procs = [subprocess.Popen(["wrk", "-t1", f"-c{per_url}", f"-d{seconds}s", "--latency",
                               "-s", str(script), url], stdout=subprocess.PIPE, text=True)
             for url in urls]
    rps, p99, errors = 0.0, 0.0, 0
    for proc in procs:
        out, _ = proc.communicate()
        rps += float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
        p99 = max(p99, float(m.group(1)) * _UNITS[m.group(2)])
        for pattern in (r"Non-2xx or 3xx responses:\s+(\d+)",
                        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"):
            m = re.search(pattern, out)
            if m:
                errors += sum(int(g) for g in m.groups())
    return rps, p99, errors


def profile_balancer(pid: int, urls: list[str], args: argparse.Namespace, script: Path,
                     work: Path) -> None:
    """py-spy under load; prints the hottest functions (own time) and their share."""
    raw = work / "profile.txt"
    py_spy = Path(sys.executable).parent / "py-spy"
    spy = subprocess.Popen([str(py_spy), "record", "-p", str(pid), "-o", str(raw), "-f", "raw",
                            "-r", "250", "-d", str(args.seconds), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_wrk(urls, args.seconds, args.connections, script)
    spy.wait()
    own: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frame = stack.split(";")[-1]
        own[re.sub(r" \(.*/site-packages/", " (", frame)] += int(count)
    total = sum(own.values())
    print(f"\nbalancer profile ({total} samples at 250 Hz), own time:")
    for frame, count in own.most_common(15):
        print(f"  {100 * count / total:5.1f}%  {frame}")


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
    for tool in ("wrk", "haproxy"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (apt-get install {tool}); `make bench-lb` does it")

    work = Path(tempfile.mkdtemp(prefix="bench-lb-"))
    script = work / "rid.lua"
    script.write_text(LUA)
    lb_port, ha_port = free_port(), free_port()
    lb = subprocess.Popen([sys.executable, "-m", "dslab.balancer", "--port", str(lb_port),
                           "-n", str(args.replicas), "--hash", args.hash,
                           "--log-level", "WARNING"])
    haproxy = None
    try:
        wait_http(lb_port)
        ports = replica_ports(lb.pid)
        assert len(ports) == args.replicas, ports
        cfg = work / "haproxy.cfg"
        cfg.write_text(haproxy_config(ha_port, ports))
        haproxy = subprocess.Popen(["haproxy", "-f", str(cfg)])
        wait_http(ha_port, "/home")
        targets = {
            "direct": [f"http://127.0.0.1:{p}/home" for p in ports.values()],
            "haproxy": [f"http://127.0.0.1:{ha_port}/home"],
            "lb": [f"http://127.0.0.1:{lb_port}/home"],
        }
        print(f"{os.cpu_count()} cores; {args.replicas} Tornado replicas; wrk {args.connections} "
              f"connections, {args.seconds}s x {args.rounds} rounds per target", flush=True)
        results: dict[str, list[tuple[float, float, int]]] = {k: [] for k in targets}
        for rnd in range(1, args.rounds + 1):
            for name, urls in targets.items():
                run_wrk(urls, 1, args.connections, script)  # warm-up
                res = run_wrk(urls, args.seconds, args.connections, script)
                results[name].append(res)
                print(f"round {rnd} {name:8s} {res[0]:9.0f} req/s  p99 {res[1]:7.2f} ms  "
                      f"errors {res[2]}", flush=True)
        med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v),
                   sum(r[2] for r in v)) for k, v in results.items()}
        print("\nmedian       req/s     p99 ms   errors")
        for name, (rps, p99, err) in med.items():
            print(f"{name:8s} {rps:9.0f} {p99:10.2f} {err:8d}")
        print(f"\nlb/haproxy = {med['lb'][0] / med['haproxy'][0]:.2f}   "
              f"lb/direct = {med['lb'][0] / med['direct'][0]:.2f}   "
              f"haproxy/direct = {med['haproxy'][0] / med['direct'][0]:.2f}")
        if args.profile:
            profile_balancer(lb.pid, targets["lb"], args, script, work)
    finally:
        if haproxy:
            haproxy.terminate()
            haproxy.wait()
        lb.send_signal(signal.SIGTERM)
        lb.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
