"""The Makefile's own errors, as a user without the tools meets them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

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


def test_make_images_fails_when_any_build_fails_not_only_the_last():
    """A target that does not exist, then one that builds: the make fails and says which.
    (The loop's status used to be its last build's.) Needs the images built once: cached,
    the second build takes a second."""
    images = subprocess.run(["docker", "image", "inspect", "dslab-replica:latest"],
                            capture_output=True, timeout=60) if shutil.which("docker") else None
    if images is None or images.returncode != 0:
        pytest.skip("no Docker engine or no dslab-replica image here (make images builds it)")
    done = subprocess.run(["make", "-s", "build-images", "IMAGE_TARGETS=no-such-target replica"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0, done.stdout
    assert "building dslab-no-such-target" in done.stdout
    assert "building dslab-replica" not in done.stdout  # stopped at the first failure


def test_make_test_with_args_runs_only_the_tests_they_name():
    """`make test ARGS='tests/test_ring.py -k NAME'` hands ARGS to pytest and runs nothing else
    (neither the whole suite nor the Rust tests); with no ARGS, everything as before. Shown by
    `make -n` (what it would run): the prerequisites may rebuild the virtualenv, not here."""
    def commands(*args: str) -> list[str]:
        done = subprocess.run(["make", "-n", "test", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if "pytest" in line or "cargo test" in line]

    assert commands("ARGS=tests/test_ring.py -k spread") == [
        ".venv/bin/python -m pytest tests/test_ring.py -k spread"]
    everything = commands()
    assert everything[-1] == ".venv/bin/python -m pytest tests"
    assert any("cargo test" in line for line in everything)
    assert commands("ARGS=") == everything
