"""`make lab` as a user meets it: here as root, with no display. It must start (Jupyter refuses
root without --allow-root), print the URL to open instead of trying a browser, and serve the
notebooks: listed through Jupyter's REST API, then stopped."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import time

import httpx
import pytest

from conftest import REPO, free_port

NOTEBOOKS = {f"{part}_a{k}.ipynb" for part in ("lb", "db") for k in range(1, 5)}


def _wait_for_url(proc: subprocess.Popen[str], timeout: float) -> tuple[str, list[str]]:
    """The first http://127.0.0.1:<port>/lab?token=... line, and everything read so far."""
    seen: list[str] = []
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if selector.select(timeout=0.5):
            line = proc.stdout.readline()
            seen.append(line)
            found = re.search(r"(http://127\.0\.0\.1:\d+/lab\?token=\w+)", line)
            if found:
                return found.group(1), seen
    raise AssertionError("make lab printed no URL:\n" + "".join(seen))


def test_make_lab_starts_as_root_without_a_display_and_serves_the_notebooks():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_PORT={port}"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        url, seen = _wait_for_url(proc, timeout=120)
        assert f":{port}/" in url
        token = url.rsplit("token=", 1)[1]
        listing = httpx.get(f"http://127.0.0.1:{port}/api/contents", params={"token": token},
                            timeout=30)
        assert listing.status_code == 200
        assert NOTEBOOKS <= {entry["name"] for entry in listing.json()["content"]}
        assert not any("Running as root is not recommended" in line and "allow-root" in line
                       for line in seen)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Stopped with nothing left: no process of its group (Jupyter, its kernels), the port shut.
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(proc.pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api", timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
