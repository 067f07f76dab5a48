"""`make run-lb` and `make run-db` in the foreground: Ctrl-C (SIGINT to the terminal's process
group) or SIGTERM to make stops everything they started."""

from __future__ import annotations

import os
import signal
import subprocess

import httpx
import psutil
import pytest

from conftest import REPO, assert_all_gone, free_port, seed_init
from dslab.stack import wait_until


def start_make(target: str, port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["make", "--no-print-directory", target, f"PORT={port}", *args],
                            cwd=REPO, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def answers(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def stop_and_check(make: subprocess.Popen, how: str, port: int) -> None:
    tree = psutil.Process(make.pid).children(recursive=True)
    if how == "ctrl-c":
        os.killpg(make.pid, signal.SIGINT)
    else:
        make.send_signal(signal.SIGTERM)
    make.wait(60)
    assert_all_gone(tree, timeout=30)
    assert answers(f"http://127.0.0.1:{port}/") is None


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm-to-make"])
def test_run_lb_leaves_nothing_behind(how):
    port = free_port()
    make = start_make("run-lb", port, "N=2")
    try:
        wait_until(lambda: (r := answers(f"http://127.0.0.1:{port}/rep")) and r.json()["message"]["N"] == 2,
                   60, what="make run-lb to serve")
        assert len(psutil.Process(make.pid).children(recursive=True)) >= 3
        stop_and_check(make, how, port)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm-to-make"])
def test_run_db_leaves_nothing_behind(how, tmp_path):
    port = free_port()
    make = start_make("run-db", port, f"ARGS=--state-dir {tmp_path}")
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/status"), 60, what="make run-db")
        body = seed_init(N=2, servers={"Server0": ["sh1", "sh2"], "Server1": ["sh3", "sh4"]})
        assert httpx.post(f"http://127.0.0.1:{port}/init", json=body, timeout=60).status_code == 200
        # the balancer, its metadata engine, two servers and their engines (and a shell, maybe)
        assert len(psutil.Process(make.pid).children(recursive=True)) >= 6
        stop_and_check(make, how, port)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
