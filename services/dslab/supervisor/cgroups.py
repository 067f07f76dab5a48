"""A CPU capacity per replica for the process backend: one cgroup per replica with a CFS quota.

On a real deployment each server is a machine with a capacity of its own; here every replica
shares the same cores. A cgroup per replica gives it ``cpus`` cores' worth of CPU time per
period (``cpus`` may be a fraction), and whatever it starts (a shard server's database engine)
inherits the group. The groups of one balancer sit under one parent group, removed with it.

Both cgroup versions:
    v1  <root>/cpu/<parent>/<name>/cpu.cfs_quota_us and cpu.cfs_period_us
    v2  <root>/<parent>/<name>/cpu.max ("quota period"); the parent enables +cpu for its
        children in cgroup.subtree_control

A replica joins its group once it is ready (``join_group``), with every process it started:
the process backend starts replicas uncapped so that a start-up never waits on the quota.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

from .base import SupervisorError

__all__ = ["CgroupError", "CpuGroups", "PERIOD_US", "join_group", "rmdir_when_empty"]

PERIOD_US = 100_000  # the kernel's default CFS period: 100 ms

_ROOT = Path("/sys/fs/cgroup")


class CgroupError(SupervisorError):
    pass


class CpuGroups:
    """The cgroups of one balancer's replicas, under ``<parent>``; ``close`` removes them all."""

    def __init__(self, cpus: float, parent: str, root: Path = _ROOT) -> None:
        if not cpus > 0:
            raise CgroupError(f"a CPU capacity must be above 0, got {cpus}")
        self.cpus = cpus
        self.version, base = _find_cpu_controller(root)
        self.parent = base / parent
        try:
            self.parent.mkdir(exist_ok=True)
            if self.version == 2:
                (self.parent / "cgroup.subtree_control").write_text("+cpu")
        except OSError as exc:
            raise CgroupError(
                f"cannot create the cgroup {self.parent} for a CPU capacity ({exc.strerror}): "
                "run the balancer as root, or use the Docker backend (--backend docker), "
                "which sets a container's CPU limit") from None

    @property
    def quota_us(self) -> int:
        return round(self.cpus * PERIOD_US)

    def path(self, name: str) -> Path:
        return self.parent / name

    def create(self, name: str) -> Path:
        """The group of replica ``name`` with its quota; returns the file a process writes its
        pid into to join it."""
        group = self.path(name)
        try:
            group.mkdir(exist_ok=True)
            if self.version == 1:
                (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(self.quota_us))
            else:
                (group / "cpu.max").write_text(f"{self.quota_us} {PERIOD_US}")
        except OSError as exc:
            raise CgroupError(f"cannot set the CPU quota of {group}: {exc.strerror}") from None
        return group / "cgroup.procs"

    def uncap(self, name: str) -> None:
        """Lift the replica's quota (it stays in its group): a replica that is being stopped
        shuts down at full speed, not at its quota's (an engine's clean shutdown took over 5 s
        at 0.1 core). A group already gone is fine."""
        group = self.path(name)
        try:
            if self.version == 1:
                (group / "cpu.cfs_quota_us").write_text("-1")
            else:
                (group / "cpu.max").write_text(f"max {PERIOD_US}")
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise CgroupError(f"cannot lift the CPU quota of {group}: {exc.strerror}") from None

    def quota(self, name: str) -> float:
        """The replica's capacity in cores, read back from its group's files."""
        group = self.path(name)
        if self.version == 1:
            quota = int((group / "cpu.cfs_quota_us").read_text())
            period = int((group / "cpu.cfs_period_us").read_text())
        else:
            text_quota, text_period = (group / "cpu.max").read_text().split()
            quota, period = (-1 if text_quota == "max" else int(text_quota)), int(text_period)
        return quota / period if quota > 0 else float("inf")

    def remove(self, name: str, timeout: float = 5.0) -> None:
        """Remove the replica's group once its processes are gone (killed by the caller)."""
        rmdir_when_empty(self.path(name), timeout)

    def close(self) -> None:
        for child in [p for p in self.parent.iterdir() if p.is_dir()] if self.parent.exists() else []:
            rmdir_when_empty(child, 5.0)
        rmdir_when_empty(self.parent, 5.0)


def join_group(pid: int, procs_file: Path) -> list[int]:
    """Move process ``pid`` and every process it started into the group whose
    ``cgroup.procs`` is ``procs_file``; returns the pids moved. A child forked while the tree
    is walked is caught by the next walk (a child forked after its parent joined is in the
    group already)."""
    moved: list[int] = []
    while True:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            raise CgroupError(f"process {pid} exited before it could join {procs_file.parent}") from None
        new = [p.pid for p in tree if p.pid not in moved]
        if not new:
            return moved
        for child in new:
            try:
                procs_file.write_text(str(child))
            except ProcessLookupError:
                continue  # a child that exited meanwhile
            except OSError as exc:
                raise CgroupError(f"cannot move process {child} into {procs_file.parent}: "
                                  f"{exc.strerror}") from None
            moved.append(child)


def _find_cpu_controller(root: Path) -> tuple[int, Path]:
    if (root / "cpu" / "cpu.cfs_quota_us").exists():
        return 1, root / "cpu"
    controllers = root / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return 2, root
    raise CgroupError(f"no cgroup CPU controller under {root}: a CPU capacity needs one, or "
                      "the Docker backend (--backend docker)")


def rmdir_when_empty(group: Path, timeout: float) -> None:
    """rmdir fails while a process is still in the group (a killed one takes a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(group)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise CgroupError(f"cannot remove the cgroup {group}: {exc.strerror}") from None
            time.sleep(0.02)
