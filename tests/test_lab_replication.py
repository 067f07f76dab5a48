"""A-6's schedule, tables and sentences, computed from hand-made runs (pure); and one live
quick-size run of both designs on the process backend, for the structure of what it returns."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dslab.faults.checks import check
from dslab.faults.history import History, Kind, Outcome
from dslab.faults.nemesis import FaultEvent, Gone
from dslab.faults.run import FaultRun
from dslab.lab import replication as rep
from dslab.lab.faults import DETECTION

OK, FAIL, UNKNOWN = Outcome.OK, Outcome.FAIL, Outcome.UNKNOWN


# ---- the schedule and the roles -----------------------------------------------------------

def test_the_schedule_lays_the_faults_one_after_another_at_their_roles():
    steps, seconds = rep.schedule()
    assert [(s.kind, s.target) for s in steps] == [
        ("lossy", "secondary"), ("pause", "secondary"), ("pause", "primary"),
        ("partition", "primary"), ("kill", "primary"), ("kill", "majority")]
    assert steps[0].at == rep.BASELINE
    assert all(b.at - a.at == f.slot for a, b, f in zip(steps, steps[1:], rep.FAULTS))
    assert seconds == steps[-1].at + rep.FAULTS[-1].slot
    # the secondary's pause is never long enough to be found; the primary's is
    paused = {s.target: s.seconds for s in steps if s.kind == "pause"}
    assert paused["secondary"] < DETECTION < paused["primary"]
    # without root, what needs iptables is left out; a scale shrinks every time
    plain, short = rep.schedule(root=False, scale=0.5)
    assert [s.kind for s in plain] == ["pause", "pause", "kill", "kill"]
    assert plain[0].at == rep.BASELINE * 0.5 and plain[0].seconds == 2.5 * 0.5
    picked, _ = rep.schedule(["primary killed", "secondary paused"])
    assert [(s.kind, s.target) for s in picked] == [("pause", "secondary"), ("kill", "primary")]
    with pytest.raises(ValueError, match="unknown faults"):
        rep.schedule(["secondary exploded"])


def test_the_schedule_is_described_from_its_steps_and_skips_said():
    text = rep.describe(["secondary paused", "primary killed"], 1.0, root=True)
    assert text.startswith("Each run lasts 22 s: no fault until 8 s, then at 8 s secondary "
                           "paused for 2.5 s; at 14 s primary killed."), text
    assert rep.skipped_sentence(None, root=True) == ""
    said = rep.skipped_sentence(None, root=False)
    assert "secondary slowed, primary partitioned left out" in said
    assert rep.skipped_sentence(["primary killed"], root=False) == ""


def test_roles_name_the_primary_a_secondary_and_the_two_of_them():
    members = ["Server5", "Server0", "Server3"]
    assert rep.roles(members, "Server3") == {"primary": ["Server3"], "secondary": ["Server0"],
                                             "majority": ["Server3", "Server0"]}
    # a primary gone (or none, under all): the first by name stands in
    assert rep.roles(members, "Server9")["primary"] == ["Server0"]
    assert rep.roles(members, None)["majority"] == ["Server0", "Server3"]
    assert rep.roles(["Server5"], "Server5") == {"primary": ["Server5"], "secondary": [],
                                                 "majority": ["Server5"]}


class FakeTarget:
    def __init__(self) -> None:
        self.ports = {"Server0": 1, "Server3": 2, "Server5": 3, "Server1": 4}
        self.killed: list[list[str]] = []
        self.paused: list[str] = []

    def servers(self):
        return dict(self.ports)

    def shard_servers(self, shard):
        return ["Server0", "Server3", "Server5"] if shard == "sh1" else ["Server1"]

    def kill(self, names):
        self.killed.append(list(names))
        return []

    def pause(self, name):
        if name not in self.ports:
            raise Gone(name)
        self.paused.append(name)
        return [], lambda: None

    def power_off(self):
        return []

    def power_on(self):
        pass


def test_a_role_is_looked_up_when_the_nemesis_lists_the_servers():
    inner = FakeTarget()
    majority = rep.RoleTarget(inner, "http://x", "majority", primary=lambda url, shard: "Server3")
    found = majority.servers()
    assert found["primary"] == 2 and found["secondary"] == 1 and found["Server5"] == 3
    majority.kill(["majority"])
    majority.pause("primary")
    assert inner.killed == [["Server3", "Server0"]] and inner.paused == ["Server3"]
    # under all: majority's primary by name while it lives, else the first by name
    everyone = rep.RoleTarget(inner, "http://x", "all", prefer="Server5",
                              primary=lambda url, shard: pytest.fail("all has no primary"))
    assert everyone.servers()["primary"] == 3
    del inner.ports["Server5"]
    assert everyone.servers()["primary"] == 1
    assert [r["primary"] for r in everyone.resolutions] == [["Server5"], ["Server0"]]
    assert len(everyone.looked_up) == 2
    inner.ports.pop("Server0")
    everyone.resolved = {"primary": ["Server0"]}
    with pytest.raises(Gone, match="primary"):
        everyone.pause("primary")


def test_the_balancer_is_asked_ahead_and_the_processes_at_the_fault():
    inner = FakeTarget()
    asked = iter(["Server3", "Server5"])
    target = rep.RoleTarget(inner, "http://x", "majority", primary=lambda url, shard: next(asked))
    target.prepare()  # the primary is Server3 now
    del inner.ports["Server3"]  # and dies before the fault: the first alive by name stands in
    assert target.servers()["primary"] == 1
    # unprepared, the lookup asks at once (the next answer: Server5)
    assert target.servers()["primary"] == 3


# ---- made-up runs ---------------------------------------------------------------------------

SH1, SH2 = 10, 5000  # a key of sh1, of sh2


def a_run(design: str, stall: float, lose_last: bool = False,
          evictions: tuple[int, ...] = (0, 0, 0, 1)) -> rep.DesignRun:
    """Writes every 0.1 s of 0.05 s, on sh1 and sh2, for 10 s; the secondary paused 3.0-4.0 s
    (a partition's lookup 0.2 s before its event) and the primary killed at 6.0 s. ``stall``:
    how long sh1's writes begun in the pause waited (till its end, under all); ``evictions``:
    the balancer's count at the start, ahead of each fault and at the end."""
    h = History()
    k = 0
    t = 0.0
    while t < 10:
        for key in (SH1 + k, SH2 + k):
            late = 3.0 <= t < 4.0 and key < 4096
            end = t + (stall if late else 0.05)
            outcome = OK
            if 6.0 <= t < 6.5 and key < 4096 and lose_last:
                outcome = UNKNOWN  # never acknowledged
            h.add(0, Kind.INSERT, key, 1, t, end, outcome)
        k += 1
        t = round(t + 0.1, 3)
    events = [FaultEvent("pause", "secondary", 3.0, 4.0, "2 processes"),
              FaultEvent("kill", "primary", 6.0, 6.05)]
    held = {op.key: 1 for op in h if op.outcome is OK}
    run = FaultRun("linearizable", 10.0, h, events, held, check(h, held, 11.0))
    return rep.DesignRun(design, run, "Server0", [["Server3"], ["Server0"]], [], [2.8, 7.0],
                         list(evictions))


def runs(**kw) -> dict[str, rep.DesignRun]:
    return {"all": a_run("all", **kw.get("all", {})),
            "majority": a_run("majority", **kw.get("majority", {}))}


def test_windows_run_from_each_fault_to_the_next_from_when_it_took_effect():
    w = rep.windows(runs(all={"stall": 1.0}, majority={"stall": 0.05}))
    mine = w[w["design"] == "all"]
    assert list(mine["fault"]) == ["no fault", "secondary paused", "primary killed"]
    # the lookup before the pause (2.8 s) is earlier than its event: the window starts there;
    # the kill's lookup is later than its event (no earlier onset): the event's start
    assert list(mine["start_s"]) == [1.0, 2.8, 6.0]
    assert list(mine["end_s"]) == [2.8, 6.0, 10.0]
    assert list(mine["fault_end_s"]) == [1.0, 4.0, 6.05]
    assert list(mine["servers"]) == ["", "Server3", "Server0"]
    assert list(mine["evicted"]) == [0, 0, 1]  # the kill's window: the killed server
    # counts missing (not taken): not said
    r = a_run("all", stall=1.0, evictions=(0, 2))
    assert rep.windows({"all": r})["evicted"].isna().tolist() == [False, True, True]


def test_window_stats_count_the_writes_that_began_in_each_window():
    stats = rep.window_stats(runs(all={"stall": 1.0}, majority={"stall": 0.05}))
    s = stats.set_index(["design", "fault"])
    # 1.0-2.8 s: 18 instants, two writes each, all acknowledged in 50 ms
    assert s.loc[("all", "no fault"), "writes_per_s"] == pytest.approx(36 / 1.8)
    assert s.loc[("all", "no fault"), "p99_ms"] == pytest.approx(50)
    assert s.loc[("all", "no fault"), "sh1_writes_per_s"] == pytest.approx(18 / 1.8)
    # the pause: sh1's writes began in it waited the second under all only
    assert s.loc[("all", "secondary paused"), "sh1_max_ms"] == pytest.approx(1000)
    assert s.loc[("majority", "secondary paused"), "sh1_max_ms"] == pytest.approx(50)
    assert s.loc[("all", "secondary paused"), "sh1_p99_ms"] > 900
    assert (stats["not_acknowledged"] == 0).all()


def test_writes_not_acknowledged_are_counted_not_timed():
    stats = rep.window_stats(runs(all={"stall": 0.05}, majority={"stall": 0.05, "lose_last": True}))
    s = stats.set_index(["design", "fault"])
    assert s.loc[("majority", "primary killed"), "sh1_not_acknowledged"] == 5
    assert s.loc[("majority", "primary killed"), "not_acknowledged"] == 5
    assert s.loc[("all", "primary killed"), "sh1_not_acknowledged"] == 0


def test_the_next_write_counts_from_the_fault_and_only_writes_begun_after_it():
    nexts = rep.next_write(runs(all={"stall": 1.0}, majority={"stall": 0.05,
                                                              "lose_last": True}))
    n = nexts.set_index(["design", "fault"])["next_write_s"]
    # all: the pause took effect at 2.8 s (its lookup); sh1's first write begun after it
    # began at 2.8 s and ended at 2.85 s (the pause's own writes begin at 3.0 s)
    assert n[("all", "secondary paused")] == pytest.approx(0.05)
    # a kill counts writes begun once its processes were dead (6.05 s): the one at 6.1 s
    assert n[("all", "primary killed")] == pytest.approx(6.15 - 6.0)
    # majority's writes to sh1 from 6.0 to 6.5 s were never acknowledged: 6.5 s's was
    assert n[("majority", "primary killed")] == pytest.approx(6.55 - 6.0)


def test_no_next_write_is_infinite_and_the_table_says_never():
    r = a_run("majority", stall=0.05)
    r.run.history.ops[:] = [op for op in r.run.history if op.key >= 4096 or op.start < 5]
    nexts = rep.next_write({"majority": r})
    assert math.isinf(nexts["next_write_s"].iloc[-1])
    shown = rep.round_table(nexts)
    assert shown["next write (s)"].iloc[-1] == "never"
    stats = rep.window_stats({"majority": r})
    shown = rep.round_table(stats, ["design", "fault"])
    assert shown.loc[("majority", "primary killed"), "sh1 p99 ms"] == "none"
    assert "sh1 not acked" in shown.columns and "writes/s" in shown.columns


def test_the_timeline_bins_acknowledged_writes_by_when_they_ended():
    frame = rep.timeline(runs(all={"stall": 1.0}, majority={"stall": 0.05}))
    mine = frame[frame["design"] == "all"].set_index("second")
    assert len(mine) == 10
    assert mine.loc[0.0, "writes_per_s"] == 20 and mine.loc[0.0, "shard_per_s"] == 10
    # under all, sh1's writes begun in the pause end a second later: fewer end in 3 s
    assert mine.loc[3.0, "shard_per_s"] == 0 and mine.loc[4.0, "shard_per_s"] == 20
    assert mine.loc[4.0, "p99_ms"] > 900


def test_the_figure_has_a_panel_per_measure_and_a_line_per_design():
    r = runs(all={"stall": 1.0}, majority={"stall": 0.05})
    fig = rep.plot_timeline(rep.timeline(r), rep.windows(r))
    assert len(fig.axes) == 3
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)
    assert fig.axes[2].get_yscale() == "log"


def test_a_shard_not_read_back_is_checked_for_linearizability_only():
    h = History()
    h.add(0, Kind.INSERT, SH1, 1, 0.0, 0.1, OK)  # sh1: not read back
    h.add(0, Kind.INSERT, SH2, 1, 0.0, 0.1, OK)
    h.add(1, Kind.WRITE, SH1 + 1, 1, 0.2, 0.3, OK)
    h.add(2, Kind.READ, SH1 + 1, 0, 0.4, 0.5, OK)  # a value nobody wrote: not linearizable
    report = rep.check_readable(h, {SH2: 1}, ["sh1"], 1.0, {})
    assert report.lost == [] and report.registers_checked == 1
    assert len(report.anomalies) == 1
    # read back, the same insert missing is lost
    assert len(rep.check_readable(h, {SH2: 1}, [], 1.0, {}).lost) == 1


# ---- the sentences, both ways ---------------------------------------------------------------

def table(all_p99: dict[str, float], maj_p99: dict[str, float], per_s=(100.0, 50.0),
          failed: dict[str, int] | None = None) -> pd.DataFrame:
    rows = []
    for design, p99s, rate in (("all", all_p99, per_s[0]), ("majority", maj_p99, per_s[1])):
        for fault, p in p99s.items():
            rows.append({"design": design, "fault": fault, "seconds": 5.0,
                         "writes_per_s": rate, "p50_ms": 20.0, "p99_ms": p, "max_ms": p,
                         "sh1_writes_per_s": rate / 4, "sh1_p99_ms": p, "sh1_max_ms": p,
                         "not_acknowledged": 0,
                         "sh1_not_acknowledged": (failed or {}).get(f"{design}/{fault}", 0)})
    return pd.DataFrame(rows)


def waits(values: dict[tuple[str, str], float]) -> pd.DataFrame:
    return pd.DataFrame([{"design": d, "fault": f, "next_write_s": v}
                         for (d, f), v in values.items()],
                        columns=["design", "fault", "next_write_s"])


def test_the_sentences_follow_the_numbers_when_all_pays():
    stats = table({"no fault": 100, "secondary paused": 2300},
                  {"no fault": 100, "secondary paused": 80})
    nexts = waits({("all", "secondary paused"): 2.5, ("majority", "secondary paused"): 0.01})
    [said] = rep.fault_sentences(stats, nexts)
    assert said == ("When the secondary was paused, sh1's write p99 was 23× its no-fault p99 "
                    "under all (2,300 ms) and 0.80× under majority (80 ms); the fault cost "
                    "all's p99 more. The next acknowledged write of sh1 came 2.5 s after the "
                    "fault took effect under all and 10 ms under majority."), said
    text = rep.observations(stats, nexts, pd.DataFrame())
    assert "majority acknowledged 50 writes/s, fewer than all's 100 (0.50×)" in text
    assert ("every write of sh1 begun in the window was acknowledged, with a p99 within 2× "
            "the no-fault p99, in 0 under all and 1 under majority") in text
    assert "within 1 s of the fault in 0 under all and 1 under majority" in text


def test_the_sentences_follow_the_numbers_when_majority_pays():
    stats = table({"no fault": 100, "primary killed": 110},
                  {"no fault": 100, "primary killed": 900}, per_s=(50.0, 100.0),
                  failed={"majority/primary killed": 7})
    nexts = waits({("all", "primary killed"): 0.1, ("majority", "primary killed"): math.inf})
    [said] = rep.fault_sentences(stats, nexts)
    assert "1.10× its no-fault p99 under all (110 ms) and 9.0× under majority" in said
    assert "the fault cost majority's p99 more" in said
    assert "7 of sh1's writes were not acknowledged under majority" in said
    assert "evicted" not in said  # not counted: not said
    assert said.endswith("came 100 ms after the fault took effect under all and never in the "
                         "rest of the run under majority.")
    text = rep.observations(stats, nexts, pd.DataFrame())
    assert "majority acknowledged 100 writes/s, more than all's 50 (2.0×)" in text
    # majority's p99 rose, and writes went unacknowledged: its window does not count
    assert "p99, in 1 under all and 0 under majority" in text


def test_evictions_in_a_window_are_said_under_the_design_that_had_them():
    stats = table({"no fault": 100, "secondary slowed": 2000},
                  {"no fault": 100, "secondary slowed": 100})
    stats["evicted"] = [0, 0, 0, 1]
    [said] = rep.fault_sentences(stats, waits({}))
    assert ("the fault cost all's p99 more; the balancer evicted 1 server in the window under "
            "majority.") in said
    stats["evicted"] = [0, 2, 0, 3]
    [said] = rep.fault_sentences(stats, waits({}))
    assert "the balancer evicted 2 servers in the window under all and 3 under majority." in said


def test_a_majority_lost_with_one_server_left_to_kill_is_said_so():
    stats = table({"no fault": 100, "majority lost": 120},
                  {"no fault": 100, "majority lost": 130})
    stats["servers"] = ["", "Server5, Server7", "", "Server5"]
    [said] = rep.fault_sentences(stats, waits({}))
    assert said.startswith("When two of sh1's three servers were killed (under majority only 1 "
                           "of them, Server5, was running to be killed), sh1's write p99"), said


def test_alike_costs_and_no_acknowledged_write_are_said_so():
    stats = table({"no fault": 100, "primary paused": 3000, "majority lost": 120},
                  {"no fault": 100, "primary paused": 2900, "majority lost": math.nan},
                  per_s=(100.0, 104.0))
    nexts = waits({("all", "primary paused"): 4.0, ("majority", "primary paused"): 4.2,
                   ("all", "majority lost"): 0.2, ("majority", "majority lost"): math.inf})
    paused, lost = rep.fault_sentences(stats, nexts)
    assert "30× its no-fault p99 under all (3,000 ms) and 29× under majority" in paused
    assert "; both p99s rose about alike." in paused
    assert lost.startswith("When two of sh1's three servers were killed, sh1's write p99 was "
                           "1.20× its no-fault p99 under all (120 ms) and none of sh1's writes "
                           "was acknowledged under majority. The next acknowledged write of sh1 came "
                           "200 ms after the fault took effect under all and never in the rest "
                           "of the run under majority."), lost
    calm = table({"no fault": 100, "secondary slowed": 120},
                 {"no fault": 100, "secondary slowed": 90})
    [slowed] = rep.fault_sentences(calm, waits({}))
    assert "neither's p99 changed much." in slowed and "next acknowledged" not in slowed
    text = rep.observations(stats, nexts, pd.DataFrame())
    assert "about as many as all's 100 (1.04×)" in text
    # a window with none acknowledged does not count as calm
    assert "p99, in 1 under all and 0 under majority" in text
    calm_failing = table({"no fault": 100, "primary killed": 100},
                         {"no fault": 100, "primary killed": 100},
                         failed={"majority/primary killed": 2})
    text = rep.observations(calm_failing, waits({}), pd.DataFrame())
    assert "p99, in 1 under all and 0 under majority" in text


def verdict(design: str, **changes) -> dict:
    row = {"design": design, "verdict": "linearizable", "registers": 8, "not_linearizable": 0,
           "undecided": 0, "inserts_acknowledged": 3000, "acknowledged_lost": 0,
           "unread_shards": "", "acknowledged_unread": 0, "phantom_or_altered": 0,
           "operations": 10000, "not_acknowledged": 0}
    row.update(changes)
    return row


def test_the_checker_sentence_says_what_was_found_and_what_could_not_be_checked():
    clean = rep.checker_sentence(pd.DataFrame([verdict("all")]))
    assert clean == ("The checker found, under **all**, in 10,000 operations (0 not "
                     "acknowledged, 0.0%), every one of its 8 registers linearizable and 0 of "
                     "the 3,000 acknowledged inserts it could read back lost."), clean
    bad = rep.checker_sentence(pd.DataFrame([verdict(
        "majority", verdict="anomalies", not_linearizable=2, undecided=1, acknowledged_lost=3,
        unread_shards="sh1", acknowledged_unread=500, not_acknowledged=300)]))
    assert "(300 not acknowledged, 3.0%)" in bad
    assert "2 of 8 registers not linearizable, 1 undecided (not passed" in bad
    assert "3 of the 2,500 acknowledged inserts it could read back lost" in bad
    assert "sh1, which did not serve again within" in bad and "500 acknowledged" in bad
    assert "linearizable and" not in bad


def test_anomalies_are_shown_with_their_operations():
    r = a_run("majority", stall=0.05)
    assert rep.anomalies_markdown({"majority": r}) == ""
    h = History()
    h.add(0, Kind.WRITE, SH1, 1, 0.0, 0.1, OK)
    h.add(1, Kind.READ, SH1, 7, 0.2, 0.3, OK)
    r.run.report = check(h)
    shown = rep.anomalies_markdown({"majority": r})
    assert shown.startswith("**majority**:\n\n```\nkey 10") and "returned 7" in shown


def test_the_report_registers_a6_with_quick_sizes():
    from dslab.lab.report import EXPERIMENTS, QUICK

    assert "db_a6" in EXPERIMENTS
    steps, seconds = rep.schedule(QUICK["db_a6"]["faults"], QUICK["db_a6"]["scale"])
    assert seconds < 15 and len(steps) == 2


# ---- live ------------------------------------------------------------------------------------

def test_a_quick_run_of_both_designs_has_every_window_and_a_decided_checker():
    """Both designs through a paused secondary and a killed primary on the process backend,
    at the notebook's quick size: every window has its row, each fault a next write, the
    checker decided, and nothing acknowledged was lost."""
    labels = ["secondary paused", "primary killed"]
    runs = rep.compare(rep.DESIGNS, labels, scale=0.4, root=False, writers=2, updaters=2,
                       readers=2, registers_per_updater=2)
    assert list(runs) == ["all", "majority"]
    assert runs["majority"].primary is not None
    assert runs["all"].primary == runs["majority"].primary  # the same server, by name
    stats = rep.window_stats(runs)
    assert set(zip(stats["design"], stats["fault"])) == {
        (d, f) for d in rep.DESIGNS for f in ["no fault", *labels]}
    assert (stats["writes_per_s"] > 0).all()
    nexts = rep.next_write(runs)
    assert len(nexts) == 4
    found = rep.verdicts(runs).set_index("design")
    assert set(found["verdict"]) <= {"linearizable", "anomalies"}  # decided
    assert (found["acknowledged_lost"] == 0).all()
    assert (found["registers"] > 0).all()
    spans = rep.windows(runs).set_index(["design", "fault"])
    for design, r in runs.items():
        assert len(r.evictions) == 4  # at the start, ahead of each fault, at the end
        assert spans.loc[(design, "primary killed"), "evicted"] >= 1  # the dead one
        assert [e.kind for e in r.run.events] == ["pause", "kill"]
        assert r.run.events[0].effect["stopped"] == r.run.events[0].effect["processes"] >= 2
        assert r.faulted[1] == [r.faulted[1][0]] and r.faulted[0] != r.faulted[1]
    assert "**Observations.**" in rep.observations(stats, nexts, rep.verdicts(runs))
