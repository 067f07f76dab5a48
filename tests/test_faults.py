"""The nemesis against a live Part 2 stack (process backend, loopback only), with the A-5
client running: for each fault kind, the fault shown to have happened (processes stopped or
killed, packets dropped, the server evicted and replaced, operations failed in its window),
no acknowledged write lost, nothing phantom, and with linearizable reads no anomaly, while
``any`` reads are caught going back in time; the nemesis leaves no rule and no stopped process
behind."""

from __future__ import annotations

import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import detection_time
from dslab.db.seed import shard_of
from dslab.faults import iptables
from dslab.faults.history import Kind, Outcome
from dslab.faults.linearizable import NotLinearizable
from dslab.faults.nemesis import Nemesis, ProcessTarget, Step
from dslab.faults.run import fault_stack, run_faults
from dslab.stack import wait_until
from dslab.supervisor import ProcessSupervisor

pytestmark = pytest.mark.skipif(
    shutil.which("iptables") is None or os.geteuid() != 0,
    reason="partitions and lossy links need iptables, as root")

HEARTBEATS = ("--heartbeat-interval", "0.25", "--heartbeat-timeout", "1.0",
              "--heartbeat-misses", "3")
HEARTBEAT_TIMEOUT = 1.0
DETECTION = detection_time("dslab.db", *HEARTBEATS)  # a hung server found dead within it
# A replacement answers within the process supervisor's start timeout, or has failed.
START = inspect.signature(ProcessSupervisor).parameters["start_timeout"].default
SMALL = {"writers": 2, "updaters": 2, "readers": 3, "registers_per_updater": 3}


@pytest.fixture(scope="module")
def stack():
    with fault_stack("linearizable", *HEARTBEATS) as db:
        yield db
    assert mine() == []


def mine() -> list[str]:
    """The rules of this process's nemeses (another test process may run one meanwhile)."""
    return iptables.leftovers(os.getpid())


def stopped(db) -> list[psutil.Process]:
    return [p for p in db.descendants() if p.status() == psutil.STATUS_STOPPED]


def counter(url: str, name: str) -> float:
    """A counter of the balancer's /metrics (0 if absent)."""
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return 0.0


def summed(url: str, name: str) -> float:
    """A counter of the balancer's /metrics, summed over its labels."""
    return sum(sample.value
               for family in text_string_to_metric_families(
                   httpx.get(f"{url}/metrics", timeout=30).text)
               for sample in family.samples if sample.name == name)


def not_acknowledged_within(run, start: float, end: float) -> list:
    """Operations on the run's history that began in [start, end] and were not acknowledged."""
    return [op for op in run.history
            if start <= op.start <= end and op.outcome is not Outcome.OK]


def settled(url: str) -> None:
    """Wait until no replica of the (shared) stack is evicted and awaiting its replacement: a
    fault of an earlier test may still be being repaired, and a fault aimed at a server
    already evicted would show no new eviction. Within the time to find a hung server and
    start another, twice."""
    wait_until(lambda: counter(url, "dslab_replicas_evicted") == 0, 2 * (DETECTION + START),
               interval=0.1, what="no replica awaiting its replacement")


def stalled_within(run, start: float, end: float, seconds: float) -> list:
    """Operations that began in [start, end] and waited ``seconds`` or more for an answer."""
    return [op for op in run.history
            if start <= op.start <= end and op.end - op.start >= seconds]


def assert_valid_registers(run) -> None:
    assert not run.report.anomalies and not run.report.undecided, run.report.explain()
    assert [op for op in run.history if op.kind is Kind.READ and op.outcome is Outcome.OK]


def assert_valid(run) -> None:
    assert run.report.valid, run.report.explain()
    ok_writes = [op for op in run.history if op.kind is not Kind.READ and op.outcome is Outcome.OK]
    ok_reads = [op for op in run.history if op.kind is Kind.READ and op.outcome is Outcome.OK]
    assert ok_writes and ok_reads, "the clients got nothing done: the run proves nothing"
    assert run.report.registers_checked == 6


@pytest.mark.parametrize("kind", ["kill", "pause", "partition", "lossy"])
def test_one_server_faulted_under_load_loses_nothing_and_reads_stay_linearizable(stack, kind):
    """A fault of one shard server 1 s in, lasting twice the time to find a hung server (so a
    pause and a partition are found and the server replaced), then as long again of load."""
    lasts = 0.0 if kind == "kill" else 2 * DETECTION
    settled(stack.url)
    evicted = counter(stack.url, "dslab_evictions_total")
    run = run_faults(stack, [Step(1.0, kind, lasts)], 1.0 + lasts + DETECTION + 2, **SMALL)
    [event] = run.events
    assert event.kind == kind and event.end is not None and event.end >= event.start + lasts
    # the fault took effect: every process of the server (its engine too) stopped or killed,
    # or the rules dropped packets; and the balancer saw it
    if kind in ("kill", "pause"):
        assert event.effect["processes"] >= 2  # the server and its engine
        assert event.effect["killed" if kind == "kill" else "stopped"] == event.effect["processes"]
    else:
        assert event.effect["dropped"] > 0
    if kind != "lossy":  # a lossy link may slow the server without failing it
        assert counter(stack.url, "dslab_evictions_total") > evicted
    if kind in ("pause", "partition"):  # a killed server refuses at once: it is evicted and
        # the write goes on without it; a hung one holds the writes of its shards until found
        assert stalled_within(run, event.start, event.start + lasts, HEARTBEAT_TIMEOUT)
    assert_valid(run)
    assert mine() == [] and stopped(stack) == []


@pytest.fixture(scope="module")
def majority():
    with fault_stack("linearizable", *HEARTBEATS, "--replication", "majority") as db:
        yield db
    assert mine() == []


@pytest.mark.parametrize("kind", ["kill", "pause", "partition", "lossy"])
def test_under_majority_one_server_faulted_loses_nothing_and_reads_stay_linearizable(
        majority, kind):
    """The same faults on --replication majority: a faulted primary is replaced (the term
    grows), a faulted secondary is not waited for; nothing acknowledged is lost, no read goes
    back in time, every register is decided."""
    lasts = 0.0 if kind == "kill" else 2 * DETECTION
    settled(majority.url)
    elections = summed(majority.url, "dslab_db_elections_total")
    run = run_faults(majority, [Step(1.0, kind, lasts)], 1.0 + lasts + DETECTION + 2, **SMALL)
    [event] = run.events
    if kind in ("kill", "pause"):
        assert event.effect["processes"] >= 2
        assert event.effect["killed" if kind == "kill" else "stopped"] == event.effect["processes"]
    else:
        assert event.effect["dropped"] > 0
    if kind != "lossy":  # the faulted server leaves its shards' sets: each elects again
        assert summed(majority.url, "dslab_db_elections_total") > elections
    assert_valid(run)
    assert mine() == [] and stopped(majority) == []


def test_a_partitioned_port_does_not_answer_until_healed(stack):
    """The DROP rule is a partition a client can see: a connect to the server's port times out,
    and goes through again once the rule is gone."""
    def connects(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except TimeoutError:
            return False

    with Nemesis(ProcessTarget(stack)) as nemesis:
        name, port = sorted(ProcessTarget(stack).servers().items())[0]
        assert connects(port)
        event = nemesis.partition(name)
        assert not connects(port)
        nemesis.end(event)
        assert event.effect["dropped"] > 0  # the SYN and its retries
        assert connects(port)
    assert mine() == []


def test_a_server_gone_between_listing_and_signal_is_recorded_not_a_crash(stack):
    """The race that stopped A-5: a shard's servers listed by /status, one of them dead
    meanwhile (killed here, still listed until its eviction). The shard loss kills the live
    ones and goes on; a pause of a server that is not running is recorded as gone."""
    target = ProcessTarget(stack)
    with Nemesis(target) as nemesis:
        [first, *rest] = target.shard_servers("sh3")
        nemesis.kill(first)
        assert target.kill([first]) == []  # dead: nothing to signal, and no KeyError
        loss = nemesis.shard_loss("sh3")  # /status may still list the dead one
        assert loss.effect["killed"] == loss.effect["processes"] >= 2 * len(rest)
        gone = nemesis.pause("Server-that-never-was")
        assert gone.note.startswith("gone") and gone.effect == {"processes": 0}
    # the stack brings sh3 back before the module's next test
    wait_until(lambda: httpx.post(f"{stack.url}/read", json={"Stud_id": {"low": 8192, "high": 8200}},
                                  timeout=5).status_code == 200, timeout=120)


def test_any_reads_are_caught_going_back_in_time_and_linearizable_ones_never():
    """The checker must be able to fail on this system: with ``any`` reads (no lock, any
    replica), a reader that asks the replica a write has not reached yet reads a version older
    than one another reader saw before, and the checker finds it. The same load and the same
    pause on a ``linearizable`` stack: no anomaly. The race is frequent (two or more in each of
    the 4 s runs seen here); up to three runs are given to catch it."""
    busy = {"writers": 1, "updaters": 2, "readers": 6, "registers_per_updater": 1}
    steps = [Step(0.5, "pause", 2.0)]
    with fault_stack("any", *HEARTBEATS) as db:
        for _ in range(3):
            run = run_faults(db, steps, 4.0, read_consistency="any", **busy)
            if run.report.anomalies:
                break
    assert run.report.anomalies, "no read went back in time in three runs of any reads"
    anomaly = run.report.anomalies[0]
    assert isinstance(anomaly, NotLinearizable)
    back = [op for op in anomaly.stuck if op.kind is Kind.READ]
    assert back and all(op.value is None or anomaly.value is not None and op.value < anomaly.value
                        for op in back), anomaly.explain()
    with fault_stack("linearizable", *HEARTBEATS) as db:
        run = run_faults(db, steps, 4.0, read_consistency="linearizable", **busy)
    assert run.events[0].effect["stopped"] == run.events[0].effect["processes"]
    assert_valid_registers(run)


def test_a_shard_lost_under_load_comes_back_with_every_acknowledged_row(stack):
    """Every server of sh2 SIGKILLed at once: the shard is started again in place on its
    servers' data and serves again; nothing acknowledged is lost, nothing phantom. A power
    loss after it restarts the balancer: what its /metrics counted of the revival is kept."""
    run = run_faults(stack, [Step(1.0, "shard_loss", target="sh2"), Step(8.0, "power_loss")],
                     16.0, **SMALL)
    event = run.events[0]
    assert event.kind == "shard_loss" and event.effect["killed"] == event.effect["processes"]
    on_sh2 = [op for op in run.history if shard_of(op.key) == "sh2" and op.kind is not Kind.READ]
    back = [op for op in on_sh2 if op.outcome is Outcome.OK and op.start > event.start]
    assert back, "sh2 never served a write again"
    assert_valid(run)
    count, _ = run.revival.get("serving", (0, 0.0))
    assert count >= 1  # it came back by a restart in place, as /metrics counts


def test_power_loss_keeps_every_acknowledged_write(tmp_path):
    """The whole stack (balancer, its metadata engine, every shard server and engine) frozen
    and SIGKILLed at once with writes in flight, as a step of the schedule while the clients
    run, then started again on its state; then once more after the run, and each read-back
    checked against the one before it."""
    with fault_stack("linearizable", *HEARTBEATS) as db:
        run = run_faults(db, [Step(2.0, "power_loss")], 12.0, power_loss=True, **SMALL)
        [loss, after] = [e for e in run.events if e.kind == "power_loss"]
        assert loss.effect["killed"] == loss.effect["processes"] > 1 + 2 * 6
        # it landed inside the workload, with operations in flight, and some failed across it
        # (the restart may outlast the clients' run: on a busy machine it took 10 s)
        assert loss.start < run.seconds and loss.end is not None
        assert [op for op in run.history if op.start < loss.start < op.end]
        assert not_acknowledged_within(run, loss.start, min(loss.end, run.seconds))
        assert after.start > run.seconds
        # restarted by the nemesis, the stack outlives the run (it asks to die with the
        # thread that started it: not one of asyncio's, which end with the run)
        assert httpx.get(f"{db.url}/status", timeout=30).status_code == 200
        assert_valid(run)
        assert run.after_power_loss is not None
        assert run.after_power_loss.valid, run.after_power_loss.explain()
        acknowledged = {op.key for op in run.history
                        if op.kind is Kind.INSERT and op.outcome is Outcome.OK}
        assert acknowledged <= set(run.held_after_power_loss)
        assert set(run.held) <= set(run.held_after_power_loss)
        seen = db.descendants()
    assert seen and not [p for p in seen if p.is_running()
                         and p.status() != psutil.STATUS_ZOMBIE]


def test_ctrl_c_undoes_every_fault(stack):
    """A KeyboardInterrupt in the middle of a partition and a pause: the rules are gone and
    the paused server runs again."""
    with pytest.raises(KeyboardInterrupt), Nemesis(ProcessTarget(stack)) as nemesis:
        names = sorted(ProcessTarget(stack).servers())
        nemesis.partition(names[0])
        nemesis.pause(names[1])
        assert len(mine()) == 4  # the chain, the jump, two rules
        assert stopped(stack)
        raise KeyboardInterrupt
    assert mine() == []
    assert stopped(stack) == []


def test_a_nemesis_killed_outright_is_swept_by_the_next(stack):
    """SIGKILL leaves no chance to clean up: the next nemesis removes the dead one's chain."""
    code = ("import time; from dslab.faults.iptables import LoopbackRules as R; r = R(); "
            "r.add(R.cut(1)[0]); print('ready', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        assert len(iptables.leftovers(child.pid)) == 3  # the chain, the jump, the rule
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert f"DSLAB-NEM-{child.pid}" in iptables.sweep()
    assert iptables.leftovers(child.pid) == []


def test_the_schedule_records_when_each_fault_began_and_ended(stack):
    steps = [Step(0.2, "partition", 0.5), Step(0.3, "lossy", 0.4, share=0.1)]
    started = time.monotonic()
    run = run_faults(stack, steps, 1.0, **SMALL)
    assert time.monotonic() - started >= 1.0
    by_kind = {e.kind: e for e in run.events}
    assert by_kind["partition"].start >= 0.2 and by_kind["partition"].end >= 0.7
    assert by_kind["lossy"].start >= 0.3 and "10% of packets" in by_kind["lossy"].note
    assert mine() == []


def test_on_docker_every_fault_and_a_power_loss_lose_nothing(docker):
    """The same nemesis against shard servers as containers (ports published on loopback): a
    kill, a pause and a partition each long enough to be found, a shard lost, then a power
    loss, after which the balancer must start its servers again although their dead
    containers still hold their names. Nothing of the stack is left afterwards."""
    lasts = 2 * DETECTION
    steps = [Step(1.0, "kill"), Step(3.0, "pause", lasts), Step(5.0 + lasts, "partition", lasts),
             Step(7.0 + 2 * lasts, "shard_loss", target="sh2")]
    with fault_stack("linearizable", *HEARTBEATS, backend="docker") as db:
        name = db.args[db.args.index("--stack") + 1]
        run = run_faults(db, steps, 12.0 + 2 * lasts, power_loss=True, **SMALL)
    assert [e.kind for e in run.events] == ["kill", "pause", "partition", "shard_loss",
                                            "power_loss"]
    assert_valid(run)
    assert run.after_power_loss is not None and run.after_power_loss.valid, \
        run.after_power_loss.explain()
    label = {"label": f"dslab.stack={name}"}
    assert docker.containers.list(all=True, filters=label) == []
    assert docker.volumes.list(filters=label) == []
    assert mine() == []
