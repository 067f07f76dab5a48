"""Loopback packet rules owned by one process: a chain of its own, removed on exit.

Every rule a nemesis adds lives in the chain ``DSLAB-NEM-<pid>``, jumped to from INPUT for
packets on ``lo`` only: a fault touches the stack's own loopback ports and nothing else.
Closing removes the jump and the chain; a chain whose owner died without closing (SIGKILL)
is swept by the next nemesis to start, and ``leftovers`` lists what is there for a test.

A partition is a DROP of the server's port both ways (requests in, answers out), a lossy link
the same with iptables' ``statistic`` match dropping a share of the packets at random. (No
added delay: this machine's kernel has no netem.)
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import threading

__all__ = ["LoopbackRules", "NoIptables", "leftovers", "sweep", "why_not"]

PREFIX = "DSLAB-NEM-"


class NoIptables(RuntimeError):
    pass


def why_not() -> str | None:
    """None when this process can add rules; else why not, in a sentence's words (a user
    who is not root runs the other faults, and is told what was left out)."""
    if shutil.which("iptables") is None:
        return "iptables is not installed (Debian's package iptables)"
    if os.geteuid() != 0:
        return "iptables rules need root, and this run is not root"
    done = subprocess.run([shutil.which("iptables") or "iptables", "-w", "-S"],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else f"iptables refused: {done.stderr.strip()}"


def _iptables(*args: str, check: bool = True) -> str:
    exe = shutil.which("iptables")
    if exe is None:
        raise NoIptables("iptables not found: partitions and lossy links need it (and root)")
    done = subprocess.run([exe, "-w", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NoIptables(f"iptables {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def leftovers(owner: int | None = None) -> list[str]:
    """Every rule or chain of a nemesis now in the filter table: of any, or of the nemesis
    of process ``owner``."""
    mark = PREFIX if owner is None else f"{PREFIX}{owner}"
    return [line for line in _iptables("-S").splitlines()
            if mark in line and (owner is None or re.search(rf"{mark}\b", line))]


def sweep() -> list[str]:
    """Remove the chains of nemeses whose process is gone; returns their names."""
    swept = []
    for chain in sorted(set(re.findall(rf"{PREFIX}(\d+)", "\n".join(leftovers())))):
        if not _alive(int(chain)):
            _remove_chain(PREFIX + chain)
            swept.append(PREFIX + chain)
    return swept


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_chain(chain: str) -> None:
    jump = ["INPUT", "-i", "lo", "-j", chain]
    while _ok("-C", *jump):
        _iptables("-D", *jump)
    if _ok("-L", chain, "-n"):
        _iptables("-F", chain)
        _iptables("-X", chain)


def _ok(*args: str) -> bool:
    exe = shutil.which("iptables") or "iptables"
    return subprocess.run([exe, "-w", *args], capture_output=True).returncode == 0


class LoopbackRules:
    """The rules of one nemesis; safe to use from several threads (a schedule's faults begin
    and end from worker threads)."""

    def __init__(self) -> None:
        self.chain = f"{PREFIX}{os.getpid()}"
        self._open = False
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)

    def _open_locked(self) -> None:
        if not self._open:
            sweep()
            _remove_chain(self.chain)  # of an earlier nemesis of this process
            _iptables("-N", self.chain)
            _iptables("-I", "INPUT", "-i", "lo", "-j", self.chain)
            self._open = True

    def open(self) -> None:
        with self._lock:
            self._open_locked()

    def close(self) -> None:
        with self._lock:
            if self._open:
                _remove_chain(self.chain)
                self._open = False

    def add(self, rule: list[str]) -> list[str]:
        """Append ``rule``; returns it as added (named by a comment, so that its counters can
        be read and it can be deleted): pass that to ``packets`` and ``delete``."""
        with self._lock:
            self._open_locked()
            named = [*rule[:-2], "-m", "comment", "--comment",
                     f"dslab-{next(self._numbers)}", *rule[-2:]]
            _iptables("-A", self.chain, *named)
        return named

    def packets(self, rule: list[str]) -> int:
        """The packets ``rule`` (as ``add`` returned it) has matched so far: a fault's proof
        that it took effect."""
        name = rule[rule.index("--comment") + 1]
        with self._lock:
            if not self._open:
                return 0
            listing = _iptables("-v", "-S", self.chain)
        for line in listing.splitlines():
            if re.search(rf"--comment \"?{name}\"? ", line):
                found = re.search(r" -c (\d+) \d+", line)
                return int(found.group(1)) if found else 0
        return 0

    def delete(self, rule: list[str]) -> None:
        with self._lock:
            if self._open:
                _iptables("-D", self.chain, *rule, check=False)

    @staticmethod
    def cut(port: int) -> list[list[str]]:
        """A server's port cut off both ways."""
        return [["-p", "tcp", "--dport", str(port), "-j", "DROP"],
                ["-p", "tcp", "--sport", str(port), "-j", "DROP"]]

    @staticmethod
    def lossy(port: int, share: float) -> list[list[str]]:
        """A share of the packets to and from a server's port dropped at random."""
        chance = ["-m", "statistic", "--mode", "random", "--probability", f"{share:.4f}"]
        return [["-p", "tcp", "--dport", str(port), *chance, "-j", "DROP"],
                ["-p", "tcp", "--sport", str(port), *chance, "-j", "DROP"]]
