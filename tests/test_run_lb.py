"""`make run-lb` in the foreground: Ctrl-C (SIGINT to the terminal's process group) or SIGTERM
to make stops everything it started."""

from __future__ import annotations

import os
import signal
import subprocess

import httpx
import psutil
import pytest

from conftest import REPO, assert_all_gone, free_port
from dslab.stack import wait_until


def start_make(port: int) -> subprocess.Popen:
    return subprocess.Popen(["make", "--no-print-directory", "run-lb", f"PORT={port}", "N=2"],
                            cwd=REPO, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def serving(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/rep", timeout=2).json()["message"]["N"] == 2
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm-to-make"])
def test_run_lb_leaves_nothing_behind(how):
    port = free_port()
    make = start_make(port)
    try:
        wait_until(lambda: serving(port), 60, what="make run-lb to serve")
        tree = psutil.Process(make.pid).children(recursive=True)
        assert len(tree) >= 3  # the balancer and two replicas (and a shell, maybe)
        if how == "ctrl-c":
            os.killpg(make.pid, signal.SIGINT)
        else:
            make.send_signal(signal.SIGTERM)
        make.wait(30)
        assert_all_gone(tree)
        assert not serving(port)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
