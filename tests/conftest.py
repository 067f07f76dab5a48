"""Shared fixtures: real balancers with real replica processes, and a leak check on each."""

from __future__ import annotations

import os
import socket

import httpx
import psutil
import pytest
from hypothesis import settings

from dslab.db.seed import SEED_SCHEMA, SEED_SERVERS, SEED_SHARDS, row, seed_init  # noqa: F401
from dslab.stack import BalancerProcess

# CI replays the same examples every run (a red CI must be reproducible); locally hypothesis
# explores anew each time and remembers failures in .hypothesis/.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_all_gone(procs: list[psutil.Process], timeout: float = 10.0) -> None:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left behind: {alive}"


@pytest.fixture
def start_balancer():
    """start_balancer(*cli_args) -> a running BalancerProcess; stopped (and checked) after."""
    started: list[tuple[BalancerProcess, set[psutil.Process]]] = []

    def start(*args: str, module: str = "dslab.balancer", **kwargs) -> BalancerProcess:
        balancer = BalancerProcess(module, args=args, **kwargs).start()
        started.append((balancer, set()))
        return balancer

    yield start
    for balancer, _ in started:
        seen = balancer.descendants()
        assert balancer.stop() == 0, "the balancer did not exit cleanly on SIGTERM"
        assert_all_gone(seen)


@pytest.fixture
def balancer(start_balancer) -> BalancerProcess:
    return start_balancer("-n", "3", "--hash", "blake2b")


@pytest.fixture
def client(balancer):
    with httpx.Client(base_url=balancer.url, timeout=15) as c:
        yield c


@pytest.fixture
def start_db(start_balancer, tmp_path):
    """start_db(*cli_args) -> a running Part 2 balancer with its state in tmp_path."""
    def start(*args: str, state: str = "state") -> BalancerProcess:
        return start_balancer("--state-dir", str(tmp_path / state), *args, module="dslab.db")
    return start


def shard_rows(db: BalancerProcess, server: str, shard: str) -> list[dict]:
    """Every row of ``shard`` as the shard server ``server`` holds it, asked directly."""
    port = db.replica_ports()[server]
    response = httpx.request("GET", f"http://127.0.0.1:{port}/copy", json={"shards": [shard]},
                             timeout=30)
    assert response.status_code == 200, response.text
    return response.json()[shard]
