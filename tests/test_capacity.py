"""A CPU capacity per replica (issue: servers with a capacity of their own): a cgroup per
replica with a CFS quota in the process backend, read back from the kernel's files; a capped
replica really is slower; nothing left behind; clear errors where cgroups cannot be had.

The real-cgroup tests run where the CPU controller can be written (root, as CI here); the
cgroup v2 layout is checked on a stand-in directory tree, because this machine's CPU
controller is v1 and a v2 one cannot exist beside it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from conftest import row, seed_init, served_in, status
from dslab.lab import capacity
from dslab.supervisor import ProcessSupervisor, ReplicaSpec
from dslab.supervisor.cgroups import PERIOD_US, CgroupError, CpuGroups

V1 = Path("/sys/fs/cgroup/cpu")


needs_cgroups = pytest.mark.skipif(capacity.available() is not None or not V1.exists(),
                                   reason="the cgroup v1 CPU controller cannot be written here")


def cpu_group_of(pid: int) -> str:
    """The process's group in the CPU hierarchy, from /proc (v1: the "cpu" line)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return path
    raise AssertionError(f"no cpu cgroup line for {pid}")


def dslab_groups(pid: int) -> set[str]:
    """The parent groups made by the process ``pid`` (other tests may run beside this one)."""
    return {p.name for p in V1.iterdir() if p.name.startswith(f"dslab-{pid}-")}


@needs_cgroups
def test_a_replica_runs_in_its_own_group_with_its_quota_and_the_groups_go_with_it():

    async def scenario():
        supervisor = ProcessSupervisor(ReplicaSpec("dslab.replica", cpus=0.25))
        replica = await supervisor.spawn("S1")
        group = supervisor.cpu_groups.path("S1")
        assert int((group / "cpu.cfs_quota_us").read_text()) == PERIOD_US // 4
        assert int((group / "cpu.cfs_period_us").read_text()) == PERIOD_US
        assert supervisor.cpu_groups.quota("S1") == 0.25
        pid = supervisor.pid("S1")
        assert str(pid) in (group / "cgroup.procs").read_text().split()
        assert cpu_group_of(pid) == "/" + str(group.relative_to(V1))
        async with httpx.AsyncClient() as client:  # it serves from inside its group
            assert (await client.get(f"http://{replica.address}/home")).status_code == 200
        await supervisor.remove("S1")
        assert not group.exists()
        await supervisor.spawn("S2")
        await supervisor.close()
        assert not supervisor.cpu_groups.parent.exists()

    asyncio.run(scenario())
    assert dslab_groups(os.getpid()) == set()


@needs_cgroups
def test_a_capped_replica_under_load_is_held_to_its_quota():
    """A closed-loop load that would take a core: the kernel throttles the replica's group,
    and the CPU the replica used is its quota's worth of the wall time, not more. (Not a
    speed comparison with an uncapped replica: on a busy machine an uncapped one may get
    little more than 0.1 core itself.)"""

    async def scenario():
        capped = ProcessSupervisor(ReplicaSpec("dslab.replica", cpus=0.1))
        try:
            replica = await capped.spawn("S1")
            process = psutil.Process(capped.pid("S1"))
            stat = capped.cpu_groups.path("S1") / "cpu.stat"
            before, cpu_before, started = throttled(stat), process.cpu_times(), time.monotonic()
            served = await served_in(f"http://{replica.address}", 2.0)
            wall = time.monotonic() - started
            cpu_after = process.cpu_times()
            used = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
            assert served > 0 and throttled(stat) > before  # the quota was what held it
            # 0.1 core of the wall time, plus one period's quota of slack and a 10 ms tick
            assert used <= 0.1 * wall + 0.1 * PERIOD_US / 1e6 + 0.01, (used, wall)
        finally:
            await capped.close()

    asyncio.run(scenario())


def throttled(cpu_stat: Path) -> int:
    """Periods in which the kernel throttled the group (cgroup v1's cpu.stat)."""
    return int(dict(line.split() for line in cpu_stat.read_text().splitlines())["nr_throttled"])


@needs_cgroups
def test_six_servers_at_a_twentieth_of_a_core_start_and_run_capped_and_leave_no_group(start_db):
    """The seed's six servers, each with its engine, started at once at 0.05 core: they start
    uncapped (no start-up waits on the quota), then run inside it."""
    db = start_db("--server-cpus", "0.05")
    with httpx.Client(base_url=db.url, timeout=60) as client:
        assert client.post("/init", json=seed_init()).status_code == 200
        servers = status(client)["servers"]
        assert len(servers) == 6
        rows = [row(i * 4096 + 7) for i in range(4)]  # a row in each shard: every server writes
        assert client.post("/write", json={"data": rows}).status_code == 200
        read = client.post("/read", json={"Stud_id": {"low": 0, "high": 4 * 4096}}).json()
        assert read["data"] == rows
        processes = db.replica_processes()
        assert sorted(processes) == sorted(servers)
        for name, process in processes.items():
            group = cpu_group_of(process.pid)
            assert group.endswith("/" + name), group
            quota = int((V1 / group.lstrip("/") / "cpu.cfs_quota_us").read_text())
            assert quota == PERIOD_US // 20
            engines = process.children(recursive=True)
            assert engines and all(cpu_group_of(e.pid) == group for e in engines)
    assert len(dslab_groups(db.pid)) == 1  # one parent group for the balancer
    assert db.stop() == 0
    assert dslab_groups(db.pid) == set()


def test_a_capacity_of_zero_or_less_is_refused_at_start():
    for module, flag in (("dslab.balancer", "--replica-cpus"), ("dslab.db", "--server-cpus")):
        done = subprocess.run([sys.executable, "-m", module, flag, "0"], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2
        assert "a CPU capacity must be above 0 cores" in done.stderr


def test_where_no_cpu_controller_exists_the_error_says_so_and_names_docker(tmp_path):
    with pytest.raises(CgroupError, match="no cgroup CPU controller.*--backend docker"):
        CpuGroups(0.5, "dslab-x", root=tmp_path)


def test_where_the_group_cannot_be_made_the_error_says_why_and_names_docker(tmp_path):
    """Stand-in tree: a v1 controller whose parent group name is taken by a file (what a
    non-root user meets is a permission error; root, as here, is not refused by modes)."""
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    (tmp_path / "cpu" / "dslab-x").write_text("")
    with pytest.raises(CgroupError, match="cannot create the cgroup .*run the balancer as root, "
                                          "or use the Docker backend"):
        CpuGroups(0.5, "dslab-x", root=tmp_path)


def test_a_quota_is_lifted_for_a_stop_in_both_layouts(tmp_path):
    """Stand-in trees (v1 and v2 files): uncap writes "no limit" where the quota was; a group
    that is gone already is no error."""
    (tmp_path / "v1" / "cpu").mkdir(parents=True)
    (tmp_path / "v1" / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    v1 = CpuGroups(0.1, "dslab-x", root=tmp_path / "v1")
    v1.create("S1")
    assert v1.quota("S1") == pytest.approx(0.1)
    v1.uncap("S1")
    assert v1.quota("S1") == float("inf")
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cgroup.controllers").write_text("cpu\n")
    v2 = CpuGroups(0.1, "dslab-x", root=tmp_path / "v2")
    v2.create("S1")
    v2.uncap("S1")
    assert v2.quota("S1") == float("inf")
    v2.uncap("gone")  # no group: nothing to lift


def test_cgroup_v2_layout_on_a_stand_in_tree(tmp_path):
    """cgroup v2 (a stand-in directory: this machine's CPU controller is v1): the parent
    enables the cpu controller for its children; each replica's cpu.max is "quota period"."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    groups = CpuGroups(1.5, "dslab-x", root=tmp_path)
    assert groups.version == 2
    assert (tmp_path / "dslab-x" / "cgroup.subtree_control").read_text() == "+cpu"
    procs = groups.create("S1")
    assert procs == tmp_path / "dslab-x" / "S1" / "cgroup.procs"
    assert (tmp_path / "dslab-x" / "S1" / "cpu.max").read_text() == f"150000 {PERIOD_US}"
    assert groups.quota("S1") == 1.5


# ---- the capacity edition's arithmetic and text (pure) ----------------------------------------
def test_the_prediction_is_n_capacities_over_the_measured_spread():
    from dslab.lab import capacity

    before = {"Server1": 10, "Server2": 5}
    after = {"Server1": 70, "Server2": 25, "Server3": 10}  # Server3 joined: counted from 0
    # served 60, 20, 10: mean 30, busiest 60
    assert capacity.spread_of(before, after, ["Server1", "Server2", "Server3"]) == 2.0
    # a replica that served nothing is in the mean, not left out
    assert capacity.spread_of({}, {"Server1": 30}, ["Server1", "Server2", "Server3"]) == 3.0
    with pytest.raises(ValueError, match="no request"):
        capacity.spread_of(after, after, ["Server1"])
    assert capacity.predicted(4, 300.0, 2.0) == 600.0
    assert capacity.predicted(4, 300.0, 1.0) == 1200.0


def _runs(world, config, rps, predicted=None):
    import pandas as pd
    return pd.DataFrame([{"world": world, "config": config, "N": n, "rps": r, "errors": 0,
                          "predicted": (predicted or {}).get(n, float("nan"))}
                         for n, r in rps.items()])


def test_capacity_observations_say_grew_stayed_or_fell_as_measured():
    import pandas as pd

    from dslab.lab import capacity

    measured = pd.concat([
        _runs("uncapped", "mixed", {2: 4000, 8: 4100}),
        _runs("uncapped", "seed", {2: 4000, 8: 3000}),
        _runs("capped at 0.1 core", "mixed", {2: 600, 8: 2300}, {2: 620, 8: 2400}),
        _runs("capped at 0.1 core", "seed", {2: 320, 8: 330}, {2: 330, 8: 340}),
        _runs("capped at 0.1 core", "odd", {2: 320, 8: 330}, {2: 330, 8: 1000}),
    ], ignore_index=True)
    text = capacity.observations(measured, 300.0, 0.1)
    assert "Throughput stayed within 2% for mixed. Throughput fell for seed." in text
    assert "Throughput grew for mixed. Throughput stayed within 3% for seed and odd." in text
    assert "At N = 8, mixed and seed came within 25% of N × capacity" in text  # not odd
    assert "wrk counted" not in text
    assert "One replica capped at 0.1 core served 300 requests/s" in text
    # no cause is named that the runs did not measure
    assert "share the same cores" not in text and "hardly" not in text

    growing = _runs("uncapped", "mixed", {2: 1000, 8: 1300}).assign(errors=[0, 3])
    text = capacity.observations(growing, None, None)
    assert "Throughput grew for mixed." in text and "wrk counted 3 errors." in text
    assert "came within" not in text and "One replica" not in text


def test_throughput_by_n_records_the_spread_the_ring_gives_and_predicts_from_it():
    """Live (uncapped, wrk): the busiest / mean each run records is the balancer's count of
    that run, which for a hash is the ring's share of random ids; the prediction uses it."""
    from dslab.lab import capacity, lb
    from dslab.lab.load import random_rids
    from dslab.ring.analysis import assign, loads

    config = lb.HashConfig("seed", "seed")
    measured = capacity.throughput_by_n([config], [2, 3], None, seconds=1, capacity=100.0)
    assert list(measured.N) == [2, 3] and (measured.errors == 0).all()
    for run in measured.itertuples():
        names = [f"Server{i}" for i in range(1, run.N + 1)]
        counts = loads(assign(config.ring(names), random_rids(20000, 1)), names)
        ring_share = max(counts.values()) / (20000 / run.N)
        assert run.busiest_over_mean == pytest.approx(ring_share, rel=0.15), run
        assert run.predicted == pytest.approx(run.N * 100.0 / run.busiest_over_mean)


def test_configurations_whose_labels_hold_commas_are_listed_apart():
    import pandas as pd

    from dslab.lab import capacity

    measured = pd.concat([_runs("uncapped", label, {2: 1000, 8: 700}) for label in
                          ("seed hash", "blake2b", "seed hash, bounded 1.25")], ignore_index=True)
    assert ("Throughput fell for seed hash; blake2b and seed hash, bounded 1.25."
            in capacity.observations(measured, None, None))
