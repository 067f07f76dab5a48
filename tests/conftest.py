"""Shared fixtures: real balancers with real replica processes, and a leak check on each."""

from __future__ import annotations

import os
import socket

import httpx
import psutil
import pytest
from hypothesis import settings

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

    def start(*args: str, **kwargs) -> BalancerProcess:
        balancer = BalancerProcess(args=args, **kwargs).start()
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
