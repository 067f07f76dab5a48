"""The balancer's baselines, from Debian's packages: HAProxy in front of the same replicas, and
wrk to load any HTTP target at a rate a Python client on the same cores cannot reach.

Used by ``bench/bench_lb.py`` and by experiment A-4. ``HAProxy`` runs one frontend per
backend configuration (``HAProxyBackend``), all in front of the given replica ports, with
``balance hdr(X-Request-ID)`` and ``hash-type consistent`` (HAProxy's ring), one thread, as
our balancer is one process; each response names the replica that served it in
``X-Served-By``, as our balancer's do, so the lab counts both the same way.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["HAProxy", "HAProxyBackend", "ToolMissing", "WrkResult", "free_port", "require",
           "wrk"]

# A random six-digit X-Request-ID per request, as the assignment's clients send.
WRK_SCRIPT = """
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/home", {["X-Request-ID"] = tostring(math.random(100000, 999999))})
end
"""


class ToolMissing(RuntimeError):
    """A baseline's program is not installed."""


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(f"{tool} is not installed: `apt-get install {tool}` "
                          "(`make tools` does it, as `make test`, `make report` and "
                          "`make bench-lb` do)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers at {url}") from None
            time.sleep(0.05)


@dataclass(frozen=True)
class HAProxyBackend:
    """One frontend of HAProxy: its name and the hash-balance-factor (None: plain ring)."""

    name: str
    balance_factor: int | None = None  # percent, as HAProxy spells it: 125 means c = 1.25


class HAProxy:
    """HAProxy in front of ``replicas`` (name -> loopback port), one frontend per backend;
    ``urls[name]`` is where each listens. A context manager: started and stopped with it."""

    def __init__(self, replicas: dict[str, int], backends: list[HAProxyBackend], *,
                 name_replica: bool = True, threads: int = 1) -> None:
        self.threads = threads  # nbthread: 1 beside a one-process balancer
        self.replicas = dict(sorted(replicas.items()))
        self.backends = backends
        self.name_replica = name_replica  # X-Served-By: the lab counts by it; a benchmark need not
        self.urls: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def config(self, ports: dict[str, int]) -> str:
        lines = ["global", f"  nbthread {self.threads}", "  maxconn 4096", "defaults", "  mode http",
                 "  timeout connect 2s", "  timeout client 30s", "  timeout server 30s"]
        servers = [f"  server {name} 127.0.0.1:{port}" for name, port in self.replicas.items()]
        for backend in self.backends:
            lines += [f"frontend fe_{backend.name}", f"  bind 127.0.0.1:{ports[backend.name]}",
                      f"  default_backend be_{backend.name}",
                      f"backend be_{backend.name}", "  balance hdr(X-Request-ID)",
                      "  hash-type consistent", "  http-reuse always"]
            if self.name_replica:
                lines.append("  http-response set-header X-Served-By %[srv_name]")
            if backend.balance_factor is not None:
                lines.append(f"  hash-balance-factor {backend.balance_factor}")
            lines += servers
        return "\n".join(lines) + "\n"

    def __enter__(self) -> HAProxy:
        binary = require("haproxy")
        ports = {backend.name: free_port() for backend in self.backends}
        self._dir = tempfile.TemporaryDirectory(prefix="dslab-haproxy-")
        cfg = Path(self._dir.name) / "haproxy.cfg"
        cfg.write_text(self.config(ports))
        self._proc = subprocess.Popen([binary, "-f", str(cfg)], stdin=subprocess.DEVNULL)
        try:
            for name, port in ports.items():
                self.urls[name] = f"http://127.0.0.1:{port}"
                wait_http(f"{self.urls[name]}/home")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None


@dataclass(frozen=True)
class WrkResult:
    rps: float  # requests per second, summed over the urls
    p99_ms: float  # the worst p99 of the urls
    errors: int  # socket errors and non-2xx answers


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(urls: list[str], seconds: float, connections: int) -> WrkResult:
    """GET /home with a random request id, one wrk per url at once, connections shared out."""
    binary = require("wrk")
    per_url = max(1, connections // len(urls))
    with tempfile.TemporaryDirectory(prefix="dslab-wrk-") as tmp:
        script = Path(tmp) / "rid.lua"
        script.write_text(WRK_SCRIPT)
        procs = [subprocess.Popen([binary, "-t1", f"-c{per_url}", f"-d{max(1, round(seconds))}s",
                                   "--latency", "-s", str(script), url],
                                  stdout=subprocess.PIPE, text=True) for url in urls]
        outputs = [proc.communicate()[0] for proc in procs]
    rps, p99, errors = 0.0, 0.0, 0
    for out in outputs:
        found = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if found is None:
            raise RuntimeError(f"wrk printed no rate:\n{out}")
        rps += float(found.group(1))
        latency = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
        if latency:
            p99 = max(p99, float(latency.group(1)) * _UNITS[latency.group(2)])
        for pattern in (r"Non-2xx or 3xx responses:\s+(\d+)",
                        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"):
            counted = re.search(pattern, out)
            if counted:
                errors += sum(int(g) for g in counted.groups())
    return WrkResult(rps, p99, errors)
