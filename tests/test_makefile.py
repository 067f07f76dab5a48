"""The Makefile's own errors, as a user without the tools meets them."""

from __future__ import annotations

import shutil
import subprocess

from conftest import REPO


def test_make_up_without_any_compose_says_what_is_missing():
    """Neither `docker compose` nor `docker-compose` on the PATH: a one-line error naming
    both, before anything is built or started."""
    make = shutil.which("make")
    assert make is not None
    for target in ("up", "down"):
        done = subprocess.run([make, "-s", target], cwd=REPO, env={"PATH": "/nonexistent"},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert ("neither 'docker compose' (the plugin) nor 'docker-compose' was found"
                in done.stderr), done.stderr
