"""The nemesis against a live Part 2 stack (process backend, loopback only), with the A-5
client running: for each fault kind, no acknowledged write lost, nothing phantom, and with
linearizable reads no anomaly; the nemesis leaves no rule and no stopped process behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import detection_time
from dslab.db.seed import shard_of
from dslab.faults import iptables
from dslab.faults.history import Kind, Outcome
from dslab.faults.nemesis import Nemesis, ProcessTarget, Step
from dslab.faults.run import fault_stack, run_faults

pytestmark = pytest.mark.skipif(
    shutil.which("iptables") is None or os.geteuid() != 0,
    reason="partitions and lossy links need iptables, as root")

HEARTBEATS = ("--heartbeat-interval", "0.25", "--heartbeat-timeout", "1.0",
              "--heartbeat-misses", "3")
DETECTION = detection_time("dslab.db", *HEARTBEATS)  # a hung server found dead within it
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
    run = run_faults(stack, [Step(1.0, kind, lasts)], 1.0 + lasts + DETECTION + 2, **SMALL)
    [event] = run.events
    assert event.kind == kind and event.end is not None and event.end >= event.start + lasts
    assert_valid(run)
    assert mine() == [] and stopped(stack) == []


def test_a_shard_lost_under_load_comes_back_with_every_acknowledged_row(stack):
    """Every server of sh2 SIGKILLed at once: the shard is started again in place on its
    servers' data and serves again; nothing acknowledged is lost, nothing phantom."""
    run = run_faults(stack, [Step(1.0, "shard_loss", target="sh2")], 12.0, **SMALL)
    [event] = run.events
    on_sh2 = [op for op in run.history if shard_of(op.key) == "sh2" and op.kind is not Kind.READ]
    back = [op for op in on_sh2 if op.outcome is Outcome.OK and op.start > event.start]
    assert back, "sh2 never served a write again"
    assert_valid(run)
    count, _ = run.revival.get("serving", (0, 0.0))
    assert count >= 1  # it came back by a restart in place, as /metrics counts


def test_power_loss_keeps_every_acknowledged_write(tmp_path):
    """The whole stack (balancer, its metadata engine, every shard server and engine) frozen
    and SIGKILLed at once with writes in flight, then started again on its state."""
    with fault_stack("linearizable", *HEARTBEATS) as db:
        run = run_faults(db, [], 4.0, power_loss=True, **SMALL)
        assert_valid(run)
        assert run.after_power_loss is not None
        assert run.after_power_loss.valid, run.after_power_loss.explain()
        acknowledged = {op.key for op in run.history
                        if op.kind is Kind.INSERT and op.outcome is Outcome.OK}
        assert acknowledged <= set(run.held_after_power_loss)
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
