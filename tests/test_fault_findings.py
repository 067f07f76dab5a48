"""A-5's tables and sentences, computed from hand-made runs (no stack runs)."""

from __future__ import annotations

import dataclasses

import pandas as pd

from dslab.faults.checks import check
from dslab.faults.history import History, Kind, Outcome
from dslab.faults.linearizable import Undecided
from dslab.faults.nemesis import FaultEvent
from dslab.faults.run import FaultRun
from dslab.lab import faults

OK, UNKNOWN = Outcome.OK, Outcome.UNKNOWN


def a_run(mode: str, stale: bool) -> FaultRun:
    """sh2 (ids 4096..8191) lost at 2.0 s and serving again by 4.5 s; with ``stale``, a read
    goes back in time on key 5000."""
    h = History()
    h.add(0, Kind.WRITE, 5000, 1, 0.0, 0.1, OK)
    h.add(0, Kind.WRITE, 5000, 2, 0.2, 0.3, OK)
    h.add(1, Kind.READ, 5000, 1 if stale else 2, 0.5, 0.6, OK)
    h.add(2, Kind.INSERT, 100, 1, 0.5, 0.6, OK)
    h.add(2, Kind.INSERT, 4100, 1, 2.1, 3.0, UNKNOWN, "503")
    h.add(2, Kind.INSERT, 4101, 1, 4.0, 4.5, OK)
    held = {5000: 2, 100: 1, 4101: 1}
    events = [FaultEvent("shard_loss", "sh2", 2.0, 2.0, "S1, S2, S3"),
              FaultEvent("power_loss", "stack", 6.0, 9.0)]
    report = check(h, held, 5.0)
    return FaultRun(mode, 5.0, h, events, held, report, after_power_loss=check(h, held, 10.0),
                    held_after_power_loss=held,
                    revival={"restart": (1, 1.5), "serving": (1, 1.75)})


def test_the_lost_shard_is_back_when_its_first_new_operation_succeeded():
    back = faults.shard_back(a_run("linearizable", stale=False))
    assert back == {"back_s": 2.5, "restart_s": 1.5, "serving_s": 1.75}


def test_tables_list_the_faults_the_anomalies_and_the_timeline():
    runs = {"linearizable": a_run("linearizable", False), "any": a_run("any", True)}
    found = faults.anomalies(runs)
    # found after the faults; after the power loss the same key is not shown twice
    assert list(found["read consistency"]) == ["any"]
    assert "read key 5000 returned 1" in found["what the checker shows"].iloc[0]
    text = faults.anomalies_markdown(found)
    assert text.startswith("The checker found **1 anomaly**")
    assert ("**any** reads, after the faults, outside every fault window:\n\n```\nkey 5000:"
            in text)
    assert list(found["verdict"]) == ["not linearizable"]
    assert "no anomaly" in faults.anomalies_markdown(found.iloc[0:0])
    assert list(faults.events(runs)["fault"]) == ["shard loss", "power loss"] * 2
    timeline = faults.timeline(runs)
    ok = timeline[(timeline["read consistency"] == "any") & (timeline["outcome"] == "ok")]
    assert dict(zip(ok["second"], ok["operations"])) == {0: 4, 4: 1}


def test_every_number_in_the_observations_comes_from_the_runs():
    runs = {"linearizable": a_run("linearizable", False), "any": a_run("any", True)}
    costs = pd.DataFrame([
        {"read consistency": "linearizable", "operation": "reads", "per_s": 80.0, "p99_ms": 160.0},
        {"read consistency": "linearizable", "operation": "writes", "per_s": 130.0, "p99_ms": 9.0},
        {"read consistency": "any", "operation": "reads", "per_s": 160.0, "p99_ms": 40.0},
        {"read consistency": "any", "operation": "writes", "per_s": 80.0, "p99_ms": 9.0}]).assign(
            anomalies=[0, 0, 2, 2])
    text = faults.observations(runs, costs)
    assert ("With **linearizable** reads, 6 operations in 5 s, 1 of them not acknowledged "
            "(16.7%); the checker found 0 registers of 1") in text
    assert "found 1 register of 1 that is not linearizable" in text
    assert ("For example key 5000: client 1 read 1 at 0.50-0.60 s, when the register already "
            "held 2") in text
    assert "every acknowledged insert was there, and every register held a value" in text
    assert ("The lost shard served again 2.5 s after its servers died: 1.8 s of it from the "
            "start of the restart in place (the first server back after 1.5 s)") in text
    assert "served 80 reads/s against 160 with any (0.50×), p99 160 ms against 40 ms" in text
    assert ("without faults the checker found 0 non-linearizable registers with linearizable "
            "reads and 2 non-linearizable registers with any reads.") in text


def test_an_undecided_register_is_said_undecided_never_linearizable():
    """A run whose only register the checker gave up on, holding no anomaly: the prose says
    undecided and not passed, and never "every register linearizable"."""
    run = a_run("linearizable", stale=False)
    run.report = dataclasses.replace(run.report, undecided=[Undecided(5000, 123)])
    run.after_power_loss = None
    runs = {"linearizable": run}
    found = faults.anomalies(runs)
    assert list(found["verdict"]) == ["undecided"]
    text = faults.anomalies_markdown(found)
    assert "no anomaly**, but did not decide every register" in text
    assert "**1 register undecided**" in text and "not passed" in text
    assert "every register linearizable" not in text
    costs = pd.DataFrame(columns=["read consistency", "operation", "per_s", "p99_ms"])
    assert "could not decide 1 (not passed" in faults.observations(runs, costs)
    decided = faults.anomalies_markdown(faults.anomalies({"linearizable": a_run("x", False)}))
    assert "decided every register" in decided and "undecided" not in decided


def test_anomalies_are_placed_in_the_fault_window_they_fell_in():
    """The stale read at 0.5 s falls in a pause from 0.4 s, or outside every window when the
    pause began later: the sentence says which, and draws no lesson about faults from reads
    that go back in time without one."""
    inside = a_run("any", stale=True)
    inside.events.insert(0, FaultEvent("pause", "Server1", 0.4, 1.0, effect={"processes": 2,
                                                                             "stopped": 2}))
    outside = a_run("any", stale=True)
    costs = pd.DataFrame(columns=["read consistency", "operation", "per_s", "p99_ms"])
    assert faults.window_of(0.5, inside) == "during the pause of Server1"
    assert "It fell inside a fault window." in faults.observations({"any": inside}, costs)
    assert ("It fell outside every fault window: these reads go back in time with or without "
            "faults.") in faults.observations({"any": outside}, costs)
    assert list(faults.events({"any": inside})["effect"])[0] == "2 of 2 processes stopped"


def test_a_fault_effect_is_put_in_words():
    assert faults.effect(FaultEvent("lossy", "S", 0, 1, effect={"dropped": 1234})) == \
        "1,234 packets dropped"
    assert faults.effect(FaultEvent("kill", "S", 0, 0, effect={"processes": 0})) == \
        "nothing: the server was gone"
    assert faults.effect(FaultEvent("kill", "S", 0, 0, effect={"processes": 2, "killed": 1})) \
        == "1 of 2 processes killed"


def test_a_shard_back_with_no_restart_in_place_is_said_so():
    """/metrics counted no revival: the shard was held by a server the nemesis did not reach,
    and the sentence says that instead of printing nan."""
    run = a_run("linearizable", stale=False)
    run.revival = {}
    costs = pd.DataFrame(columns=["read consistency", "operation", "per_s", "p99_ms"])
    text = faults.observations({"linearizable": run}, costs)
    assert "served again 2.5 s after its servers died, with no restart in place" in text
    assert "nan" not in text
