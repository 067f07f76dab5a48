"""The package as others install it. `make wheelhouse` on a host whose Python is not the
images' (3.11): the wheels must be the images' Python's, so `make images` works on a host with
Python 3.12 or 3.13 (run where a second Python is installed: pyenv's, on this machine). And
`pip install .` at the root: the package, its data and its commands."""

from __future__ import annotations

import glob
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
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


def test_pip_install_at_the_root_installs_the_package_its_data_and_its_commands(tmp_path):
    """`pip install .` at the repository's root, into a new virtualenv with nothing in it: the
    package (from services/dslab) with its py.typed and OpenAPI documents, the license, and
    the three commands, which run. Offline and in seconds: --no-deps and --no-build-isolation,
    the build backend this virtualenv's setuptools (the `test` extra's; ensurepip's is too old
    for the license field), and the new virtualenv's commands run with this one's libraries
    behind its own."""
    setuptools = importlib.metadata.distribution("setuptools")
    assert int(setuptools.version.split(".")[0]) >= 77, (
        f"setuptools {setuptools.version} here: `make venv` installs the test extra's")
    fresh = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True,
                   timeout=60)
    python = fresh / "bin" / "python"
    backend = tmp_path / "backend"  # setuptools alone, for the build (pip runs it in `fresh`)
    backend.mkdir()
    site = Path(str(setuptools.locate_file(""))).resolve()
    for name in ("setuptools", f"setuptools-{setuptools.version}.dist-info",  # its commands
                 "pkg_resources", "_distutils_hack"):
        if (site / name).exists():
            (backend / name).symlink_to(site / name)
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "-q", "--no-deps", "--no-build-isolation", "--no-index", "."],
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(backend)},
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    where = subprocess.run([str(python), "-c", "import dslab, os; print(os.path.dirname(dslab.__file__))"],
                           capture_output=True, text=True, check=True, timeout=60)
    package = Path(where.stdout.strip())
    assert package.is_relative_to(fresh), package  # installed, not this checkout's
    assert (package / "py.typed").is_file()
    assert {p.name for p in (package / "openapi").glob("*.yaml")} == {
        p.name for p in (Path(REPO) / "services/dslab/openapi").glob("*.yaml")} != set()
    licenses = list(package.parent.glob("dslab-*.dist-info/licenses/LICENSE"))
    assert licenses and "MIT License" in licenses[0].read_text()
    for command in ("dslab-lb", "dslab-db", "dslab-report"):
        assert (fresh / "bin" / command).is_file(), command
    # The libraries it needs (installed with --no-deps: none) from this virtualenv, after the
    # new one's own site-packages: dslab itself still comes from the new one.
    (package.parent / "zz_dslab_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for command, prog in (("dslab-report", "dslab.lab.report"), ("dslab-lb", "dslab.balancer"),
                          ("dslab-db", "dslab.db")):
        done = subprocess.run([str(fresh / "bin" / command), "--help"], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.startswith("usage:") and prog in done.stdout, done.stdout[:300]
    shown = subprocess.run([str(python), "-c", "import dslab.lab.report as r; print(r.__file__)"],
                           capture_output=True, text=True, check=True, timeout=120)
    assert Path(shown.stdout.strip()).is_relative_to(fresh), shown.stdout
