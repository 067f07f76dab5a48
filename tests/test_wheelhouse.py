"""`make wheelhouse` on a host whose Python is not the images' (3.11): the wheels must be the
images' Python's, so `make images` works on a host with Python 3.12 or 3.13. Run where a second
Python is installed (pyenv's, on this machine)."""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def other_python() -> str | None:
    """A Python 3.12 or 3.13 interpreter, if one is installed."""
    for version in ("3.13", "3.12"):
        found = shutil.which(f"python{version}")
        candidates = ([found] if found else []) + sorted(
            glob.glob(str(Path.home() / f".pyenv/versions/{version}*/bin/python{version}")))
        for candidate in candidates:
            done = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                                  capture_output=True, text=True)
            if done.returncode == 0 and version.replace(".", ", ") in done.stdout:
                return candidate
    return None


@pytest.mark.skipif(other_python() is None, reason="no Python 3.12 or 3.13 is installed here")
def test_a_wheelhouse_made_by_another_python_installs_in_the_images_python(tmp_path):
    python = other_python()
    assert python is not None
    wheelhouse = tmp_path / "wheelhouse"
    done = subprocess.run(["make", "-s", "wheelhouse", f"PY={python}", f"WHEELHOUSE={wheelhouse}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    wheels = [p.name for p in wheelhouse.glob("*.whl")]
    assert any(name.startswith("dslab-") and name.endswith("-py3-none-any.whl") for name in wheels)
    host = f"cp{sys.version_info.major}{sys.version_info.minor}"
    other = re.search(r"python(3)\.(\d+)$", python)
    assert other is not None
    built_for_other = f"-cp{other.group(1)}{other.group(2)}-"
    assert not [w for w in wheels if built_for_other in w], "wheels of the host's Python"
    compiled = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert compiled and all("-cp311-" in w or "-abi3-" in w for w in compiled), compiled
    # The images' Python installs the whole stack from it with no index (what the Dockerfile
    # does): a 3.11 here stands for it (this host's own, on this machine).
    image_python = sys.executable if host == "cp311" else shutil.which("python3.11")
    if image_python is None:
        pytest.skip("no Python 3.11 here to install the wheelhouse with")
    install = subprocess.run([image_python, "-m", "pip", "install", "--dry-run", "--no-index",
                              "--find-links", str(wheelhouse), "--target", str(tmp_path / "t"),
                              "dslab[docker]"], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    assert "Would install" in install.stdout and "dslab-" in install.stdout
