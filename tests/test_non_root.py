"""What a user who is not root meets: the faults that need root are left out with a reason,
and the rest runs. Run as the real user ``nobody`` (runuser), where this test runs as root."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dslab.faults import iptables
from dslab.lab import faults

IPTABLES = Path(iptables.__file__)


SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's Python may sit where nobody may not look


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None
                    or not os.path.exists(SYSTEM_PYTHON),
                    reason="needs root to run a command as nobody, and a system Python")
def test_a_user_who_is_not_root_is_told_why_packet_faults_are_left_out():
    # The module alone (standard library only), with the system's Python.
    probe = ("import importlib.util as u; s = u.spec_from_file_location('ipt', "
             f"{str(IPTABLES)!r}); m = u.module_from_spec(s); s.loader.exec_module(m); "
             "print(m.why_not())")
    done = subprocess.run(["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-c", probe],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "need root" in done.stdout
    if shutil.which("iptables"):
        assert iptables.why_not() is None  # and root here may add rules


def test_without_packet_faults_the_schedule_keeps_every_other_fault_at_its_time():
    every, seconds = faults.schedule(0.5)
    kept, same_seconds = faults.schedule(0.5, packet_faults=False)
    assert {s.kind for s in every} - {s.kind for s in kept} == {"partition", "lossy"}
    assert kept == [s for s in every if s.kind not in ("partition", "lossy")]
    assert same_seconds == seconds
