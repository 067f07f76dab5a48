"""The replication core (``dslab.replication``) stepped by hand on an in-memory network.

Each test is one order of events that matters (as etcd's ``raft_test.go`` does it): a silent
secondary, an election after a partial write, a deposed primary, a restart, a trimmed log,
Raft's Figure 8, a read. ``Net.check()`` asserts the safety invariants after each of them;
``test_replication_schedules.py`` runs them under generated schedules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from replication_net import MANAGER, Net, Violation

from dslab.replication import (
    NOOP,
    Append,
    AppendReply,
    Appoint,
    AppointReply,
    Elector,
    Entry,
    LogPosition,
    NotPrimary,
    Promise,
    PromiseReply,
    Replica,
    ReplicaLog,
    TruncateCommitted,
    commit_index,
    majority,
    may_serve,
    most_up_to_date,
    servers,
    trim_point,
)

ABC = ("a", "b", "c")


def to(*names: str):
    return lambda m: m.to in names


def elections(*names: str):
    """The election's messages (promises, appointments, their answers) among ``names``."""
    allowed = {*names, MANAGER}
    kinds = (Promise, PromiseReply, Appoint, AppointReply)
    return lambda m: isinstance(m, kinds) and m.to in allowed and m.src in allowed


def between(*names: str):
    """Messages among ``names`` and the manager only."""
    allowed = {*names, MANAGER}
    return lambda m: m.to in allowed and m.src in allowed


def booted(names=ABC, primary: str | None = None, **kw) -> Net:
    """A replica set with a primary elected (the one named, if given) and its no-op everywhere."""
    net = Net(names, **kw)
    if primary is not None:
        net.choose = net.elector.choose = lambda promises: primary
    net.elect()
    net.settle()
    net.heartbeat()
    net.settle()
    net.check()
    net.choose = net.elector.choose = most_up_to_date
    return net


# ---- the pieces alone ------------------------------------------------------------------------
def test_majority():
    assert [majority(n) for n in range(1, 7)] == [1, 2, 2, 3, 3, 4]


def test_the_log_checks_consistency_and_truncates_only_a_conflicting_suffix():
    log = ReplicaLog([Entry(1, 1), Entry(1, 2, "x"), Entry(2, 3, "y")])
    assert log.accept(3, 1, [Entry(3, 4)], commit=0) is None  # term at 3 is 2, not 1
    assert log.accept(5, 2, [], commit=0) is None  # past the end
    # A late duplicate of what we hold changes nothing (no truncation of what came after).
    same = log.accept(1, 1, [Entry(1, 2, "x")], commit=0)
    assert same is not None and same.truncated_from is None and same.appended == ()
    assert same.match_index == 2 and log.last_index == 3
    # A conflicting entry replaces the suffix from where it conflicts.
    changed = log.accept(1, 1, [Entry(1, 2, "x"), Entry(3, 3, "z")], commit=2)
    assert changed is not None and changed.truncated_from == 3
    assert log.entries(1) == (Entry(1, 1), Entry(1, 2, "x"), Entry(3, 3, "z"))
    with pytest.raises(TruncateCommitted):
        log.accept(1, 1, [Entry(4, 2, "w")], commit=2)


def test_the_log_skips_what_its_snapshot_covers():
    log = ReplicaLog([Entry(1, i) for i in range(1, 6)])
    log.trim(3)
    assert (log.first_index, log.snapshot_term, log.term_at(2)) == (4, 1, None)
    accepted = log.accept(1, 1, [Entry(1, 2), Entry(1, 3), Entry(1, 4), Entry(2, 5)], commit=3)
    assert accepted is not None and accepted.truncated_from == 5 and log.last_term == 2
    assert log.conflict_hint(9) == 5 and log.conflict_hint(5) == 4


def test_the_commit_rule_counts_only_current_term_entries():
    terms = {1: 1, 2: 2, 3: 4}.get
    # Index 2 (term 2) is on 3 of 5; the primary of term 4 must not commit it by counting.
    assert commit_index(3, [2, 2, 1, 1], 5, 1, terms, term=4) == 1
    # Once index 3, of term 4, is on a majority, 2 is committed with it.
    assert commit_index(3, [3, 3, 1, 1], 5, 1, terms, term=4) == 3
    # Never back.
    assert commit_index(3, [0, 0, 0, 0], 5, 3, terms, term=4) == 3


def test_the_trim_point_waits_for_live_replicas_within_a_bound():
    matches = {"b": 40, "c": 10}
    assert trim_point(matches, {"b", "c"}, applied=45, last_index=50, max_entries=100) == 10
    assert trim_point(matches, {"b"}, applied=45, last_index=50, max_entries=100) == 40
    assert trim_point(matches, {"b", "c"}, applied=45, last_index=50, max_entries=20) == 30
    assert trim_point(matches, {"b"}, applied=20, last_index=50, max_entries=5) == 20


def test_the_most_up_to_date_log_wins_by_term_then_index():
    promises = {"a": LogPosition(2, 9), "b": LogPosition(3, 4), "c": LogPosition(3, 6),
                "d": LogPosition(3, 6)}
    assert most_up_to_date(promises) == "c"  # c and d are equal: the first name


def test_the_elector_persists_a_new_term_and_appoints_once():
    elector = Elector("m", term=4)
    out = elector.start(("a", "b", "c"))
    assert out.persist_term == 5 and {m.to for m in out.messages} == {"a", "b", "c"}
    assert all(isinstance(m, Promise) and m.term == 5 for m in out.messages)
    refused = PromiseReply(7, "c", "m", 5, False, LogPosition(0, 0))
    assert elector.step(refused).messages == ()
    assert elector.step(PromiseReply(5, "a", "m", 5, True, LogPosition(1, 1))).messages == ()
    late = PromiseReply(4, "b", "m", 4, True, LogPosition(9, 9))  # a reply to an older election
    assert elector.step(late).messages == ()
    appoint = elector.step(PromiseReply(5, "b", "m", 5, True, LogPosition(1, 2))).messages
    assert [(m.to, m.term) for m in appoint] == [("b", 5)]
    assert elector.step(PromiseReply(5, "c", "m", 5, True, LogPosition(1, 3))).messages == ()
    assert elector.start(("a", "b", "c")).persist_term == 8  # above the 7 it heard of


# ---- commit at a majority --------------------------------------------------------------------
def test_a_write_commits_at_a_majority_while_one_secondary_is_silent():
    net = booted(primary="a")
    entry = net.write("w1")
    net.settle(between("a", "b"))  # c is paused: what is sent to it waits in flight
    assert net.replicas["a"].commit == entry.index
    assert net.data["a"][-1] == entry  # applied on the primary: acknowledged
    assert net.replicas["c"].log.last_index < entry.index
    net.check()
    net.settle()  # c wakes up and catches up; a heartbeat tells it the commit index
    net.heartbeat()
    net.settle()
    assert net.data["c"] == net.data["a"]
    net.check()


def _primary_answered_before_its_journal(replica_type=Replica) -> tuple[Net, Entry]:
    """a's journal is slow: its append to b leaves, b journals it and answers, a hears the
    answer and heartbeats (the commit index it believes goes to b with it); then a crashes
    before its journal held the entry, and c, which never got it, is elected with a."""
    net = booted(primary="a", replica_type=replica_type)
    net.slow_disks.add("a")
    entry = net.write("w1")
    net.settle(between("a", "b"))
    net.heartbeat("a")
    net.settle(between("a", "b"))
    net.crash("a")
    net.drop()
    net.slow_disks.discard("a")
    net.restart("a")
    net.elect(("a", "c"))  # b is cut off; a and c are a majority
    net.settle(lambda m: "b" not in (m.src, m.to))
    assert net.primary() in ("a", "c") and net.replicas[net.primary()].term == 2
    return net, entry


def test_a_primary_counts_itself_only_through_what_its_journal_holds():
    net = booted(primary="a")
    net.slow_disks.add("a")
    entry = net.write("w1")
    net.settle(between("a", "b"))  # b journaled and answered; a's journal has not written
    assert net.replicas["a"].commit < entry.index  # a and b, but a only in memory: 1 of 3
    net.journal("a")  # now a's journal holds it: a majority
    assert net.replicas["a"].commit == entry.index and net.data["a"][-1] == entry
    net.check()

    lost, entry = _primary_answered_before_its_journal()
    assert entry not in lost.data["b"]  # never committed, so never applied nor acknowledged
    lost.check()  # c's term overwrote it on a and c: nothing acknowledged was lost


def test_a_primary_that_counts_its_unjournaled_log_loses_an_acknowledged_write():
    """The same schedule with a primary that counts itself through its log's end."""

    class CountsItsOwnLog(Replica):
        @property
        def durable_index(self) -> int:
            return self.log.last_index

        @durable_index.setter
        def durable_index(self, value: int) -> None:
            pass

    with pytest.raises(Violation, match="state machine safety: a applies .* where another "
                                        "replica applied .*'w1'"):
        _primary_answered_before_its_journal(CountsItsOwnLog)  # b applied w1; a, c lost it


def test_a_write_without_a_majority_is_not_acknowledged():
    net = booted(primary="a")
    entry = net.write("w1")
    net.drop()  # both secondaries silent
    assert net.replicas["a"].commit < entry.index and entry not in net.data["a"]


def test_a_single_replica_commits_alone():
    net = booted(names=("a",))
    entry = net.write("w1")
    assert net.replicas["a"].commit == entry.index and net.data["a"][-1] == entry


def test_a_secondary_refuses_to_be_written_and_read_directly():
    net = booted(primary="a")
    with pytest.raises(NotPrimary):
        net.replicas["b"].propose("x")
    with pytest.raises(NotPrimary):
        net.replicas["b"].read("r")


# ---- elections -------------------------------------------------------------------------------
def test_the_election_restriction_never_picks_a_replica_missing_a_committed_entry():
    net = booted(primary="a")
    entry = net.write("w1")
    net.settle(between("a", "b"))  # committed on a and b; c never got it
    assert net.replicas["a"].commit == entry.index
    net.drop()
    net.crash("a")
    net.elect(("a", "b", "c"))
    net.settle()  # b and c promise (a is down): b's log is more up to date
    assert net.primary() == "b"
    net.check()  # leader completeness
    net.heartbeat()
    net.settle()
    assert net.data["c"][-2] == entry  # c got it from b, under b's no-op


def test_the_choice_function_is_what_keeps_a_committed_entry():
    """The same schedule with a chooser that picks the least up-to-date log: check() fails."""
    least = lambda promises: min(promises, key=lambda n: (promises[n], n))  # noqa: E731
    net = booted(primary="a")
    net.write("w1")
    net.settle(between("a", "b"))
    net.drop()
    net.crash("a")
    net.choose = net.elector.choose = least
    net.elect()
    net.settle(elections("b", "c"))
    assert net.primary() == "c"
    with pytest.raises(AssertionError, match="leader completeness"):
        net.check()
    with pytest.raises(AssertionError, match="state machine safety"):
        net.settle()  # c's no-op replaces w1 on b, and is applied where a applied w1


def test_a_promise_to_an_older_term_is_refused_with_the_newer_one():
    replica = Replica("a", term=5)
    ready = replica.step(Promise(3, MANAGER, "a"))
    (reply,) = ready.messages
    assert isinstance(reply, PromiseReply) and not reply.granted and reply.term == 5
    assert ready.hard_state is None


def test_a_promise_is_durable_before_it_is_answered():
    replica = Replica("a")
    ready = replica.step(Promise(3, MANAGER, "a"))
    assert ready.hard_state is not None and ready.hard_state.term == 3 and ready.must_persist
    assert ready.messages[0].granted  # type: ignore[union-attr]


def test_a_restarted_manager_never_reuses_a_term():
    net = booted(primary="a")
    used = net.manager_term
    net.elect()  # started, then the manager dies before any promise comes back
    net.restart_manager()
    assert net.elect().persist_term == used + 2


# ---- fencing ---------------------------------------------------------------------------------
def test_a_deposed_primary_commits_nothing_and_drops_its_uncommitted_entries():
    net = booted(primary="a")
    committed = net.write("w1")
    net.settle()
    net.heartbeat()
    net.settle()
    # A new election: b and c promise term T+1; a does not hear of it.
    old_term = net.replicas["a"].term
    net.choose = net.elector.choose = lambda promises: "b"
    net.elect(("a", "b", "c"))
    net.deliver(to("b", "c"))  # promises reach b and c only
    net.drop(to("a"))
    assert net.replicas["a"].is_primary and net.replicas["a"].term == old_term
    lost = net.write("lost", at="a")  # a still believes it is primary
    stale = net.appends_to("b", since=len(net.sent) - 2) + net.appends_to("c", len(net.sent) - 2)
    assert stale and all(m.term == old_term for m in stale)
    net.deliver(lambda m: m.src == "a")  # b and c refuse term T: fencing
    assert net.replicas["a"].commit < lost.index and lost not in net.data["a"]
    net.settle(lambda m: m.to == MANAGER)  # b is appointed for T+1
    net.deliver(to("a"))  # a hears of T+1 through the refusals, steps down
    assert not net.replicas["a"].is_primary and net.replicas["a"].term == old_term + 1
    net.settle()
    net.heartbeat()
    net.settle()
    net.check()
    # Back as a secondary, a dropped "lost" and holds b's log.
    log_a = net.replicas["a"].log.entries(1)
    assert log_a == net.replicas["b"].log.entries(1)
    assert all(e.command != "lost" for e in log_a) and committed in log_a
    assert net.disks["a"].entries == list(log_a)  # the truncation was made durable


def test_an_append_of_an_older_term_is_refused_after_a_promise():
    replica = Replica("b")
    replica.step(Promise(1, MANAGER, "b"))
    replica.step(Append(1, "a", "b", 0, 0, (Entry(1, 1),), 0))
    replica.step(Promise(2, MANAGER, "b"))
    ready = replica.step(Append(1, "a", "b", 1, 1, (Entry(1, 2, "x"),), 2))
    (reply,) = ready.messages
    assert isinstance(reply, AppendReply) and not reply.success and reply.term == 2
    assert replica.log.last_index == 1 and replica.commit == 0


def test_a_secondary_acknowledges_only_what_the_append_proved_equal():
    """An empty append that matches a prefix says nothing of the (stale) entries after it:
    the answer is prev_index + len(entries), not the log's end (Raft Figure 2)."""
    replica = Replica("b", term=2, log=ReplicaLog([Entry(1, 1), Entry(1, 2), Entry(2, 3, "s")]))
    ready = replica.step(Append(3, "c", "b", 2, 1, (), 0))
    (reply,) = ready.messages
    assert isinstance(reply, AppendReply) and reply.success and reply.match_index == 2
    assert replica.log.last_index == 3 and ready.truncate_from is None
    # The commit index it learns is capped the same way.
    replica.step(Append(3, "c", "b", 2, 1, (), 3))
    assert replica.commit == 2


def test_a_late_duplicate_append_does_not_cut_the_log():
    net = booted(primary="a")
    net.write("w1")
    first = [m for m in net.in_flight if m.to == "b"]
    net.settle()
    net.write("w2")
    net.settle()
    length = net.replicas["b"].log.last_index
    net.in_flight.extend(first)  # the first append again, late
    net.settle()
    assert net.replicas["b"].log.last_index == length
    net.check()


# ---- catch-up and copies ---------------------------------------------------------------------
def test_a_restarted_secondary_catches_up_from_its_last_index():
    net = booted(primary="a")
    for i in range(5):
        net.write(f"before{i}")
    net.settle()
    held = net.replicas["c"].log.last_index
    net.crash("c")
    for i in range(10):
        net.write(f"during{i}")
        net.settle()  # c is down: what is sent to it is lost
    net.restart("c")
    assert net.replicas["c"].log.last_index == held  # its log was durable
    mark = len(net.sent)
    net.heartbeat()
    net.settle()
    net.heartbeat()
    net.settle()
    sent = sum(len(m.entries) for m in net.appends_to("c", since=mark))
    assert sent == 10  # exactly the entries it lacked, not the whole log
    assert net.data["c"] == net.data["a"]
    net.check()


def test_a_new_primary_finds_a_lagging_secondary_by_its_hints():
    net = booted(primary="a")
    net.crash("c")
    for i in range(30):
        net.write(i)
    net.settle()
    net.restart("c")
    net.crash("a")
    net.elect()
    net.settle()
    assert net.primary() == "b"
    net.heartbeat()
    net.settle()
    net.heartbeat()
    net.settle()
    probes = [m for m in net.appends_to("c") if m.src == "b"]
    assert len(probes) <= 5 and net.data["c"] == net.data["b"]
    net.check()


def test_a_secondary_behind_the_trimmed_log_is_copied_then_caught_up():
    net = booted(primary="a")
    net.crash("c")
    for i in range(20):
        net.write(i)
    net.settle()
    primary = net.replicas["a"]
    upto = primary.trim_point(live={"b"}, max_entries=5)
    assert upto == primary.applied
    net.handle("a", primary.trim(upto))
    assert primary.log.first_index == upto + 1
    net.restart("c")
    net.heartbeat()
    net.settle()
    assert [(p, n.peer) for p, n in net.copies] == [("a", "c")]
    net.run_copies()
    for i in range(3):
        net.write(f"after{i}")
    net.settle()
    net.heartbeat()
    net.settle()
    assert net.data["c"] == net.data["a"]
    assert net.replicas["c"].log.snapshot_index == upto
    net.check()


def test_a_copy_whose_answer_was_lost_is_noticed_by_the_next_heartbeat():
    net = booted(primary="a")
    net.crash("c")
    for i in range(8):
        net.write(i)
    net.settle()
    net.handle("a", net.replicas["a"].trim(net.replicas["a"].applied))
    net.restart("c")
    net.heartbeat()
    net.settle()
    net.run_copies()
    net.drop(to("a"))  # the copy's answer is lost
    net.write("x")
    net.settle()
    net.heartbeat()
    net.settle()
    net.heartbeat()
    net.settle()
    assert net.data["c"] == net.data["a"] and not net.copies


# ---- Raft's Figure 8 -------------------------------------------------------------------------
def test_figure_8_an_older_term_entry_on_a_majority_is_not_committed_by_counting():
    """Five replicas. X (term 2) reaches a majority only under the primary of term 4, before
    that primary's own no-op does; it must not count X committed, because the primary of
    term 5 (elected by c, d, e: c's last term, 3, beats their 2) may still overwrite it, and
    does."""
    net = booted(names=("a", "b", "c", "d", "e"), primary="a", max_batch=2)
    pick = {"chosen": "a"}
    net.choose = net.elector.choose = lambda promises: pick["chosen"]
    # Term 2: a primary (promises from a, b, c); its no-op and X reach b only.
    net.elect(("a", "b", "c", "d", "e"))
    net.settle(elections("a", "b", "c"))
    net.drop()
    x = net.write("X", at="a")
    net.heartbeat("a")
    net.settle(between("a", "b"))
    net.drop()
    assert net.replicas["a"].commit < x.index
    # Term 3: c primary (promises from c, d, e); its no-op stays on c.
    net.crash("a")
    pick["chosen"] = "c"
    net.elect()
    net.settle(elections("c", "d", "e"))
    net.drop()
    # Term 4: a back, primary (promises from a, b, d).
    net.crash("c")
    net.restart("a")
    pick["chosen"] = "a"
    net.elect()
    net.settle(elections("a", "b", "d"))
    net.drop()
    term4 = net.replicas["a"].term
    # d and e lack X; a finds that out (their refusals) and sends them what they lack two
    # entries at a time: they get X, but a's own no-op never reaches anyone.
    net.heartbeat("a")
    net.deliver(lambda m: isinstance(m, Append) and m.to in ("d", "e"))
    net.settle(lambda m: {m.src, m.to} <= {"a", "d", "e"}
               and not (isinstance(m, Append) and any(e.term == term4 for e in m.entries)))
    net.drop()
    holders = [n for n in net.names if net.replicas[n].log.term_at(x.index) == x.term]
    assert holders == ["a", "b", "d", "e"]  # X is on a majority of five, and a knows it...
    assert [net.replicas["a"].progress[p].match for p in "de"] == [x.index, x.index]
    assert net.replicas["a"].commit < x.index  # ...and does not commit it: it is of term 2
    net.check()
    # Term 5: a is lost again; c (last term 3) wins over d and e, and overwrites X.
    net.crash("a")
    net.restart("c")
    net.choose = net.elector.choose = most_up_to_date
    net.elect()
    net.settle(elections("c", "d", "e"))
    assert net.primary() == "c"
    net.heartbeat("c")
    net.settle(between("c", "d", "e"))
    net.heartbeat("c")
    net.settle(between("c", "d", "e"))
    assert net.replicas["d"].log.term_at(x.index) != x.term  # X is gone from d: it was never acked
    assert all(e.command != "X" for e in net.data["c"])
    net.check()


def test_figure_8_counting_replicas_would_have_acknowledged_the_lost_entry():
    """The state of the test above, given to a commit rule that counts older-term entries."""
    terms = {1: 1, 2: 2, 3: 2, 4: 4}.get  # a's log in term 4: no-op 1, no-op 2, X at 3, no-op 4

    def counting(last_index, matches, members, current, term_at, term):
        held = sorted([last_index, *matches], reverse=True)
        return max(current, held[majority(members) - 1])

    matches = [0, 0, 3, 3]  # what a knows: d and e hold X (b does too, a has not heard)
    assert counting(4, matches, 5, 1, terms, 4) == 3  # would acknowledge X
    assert commit_index(4, matches, 5, 1, terms, 4) == 1  # the rule does not


# ---- reads -----------------------------------------------------------------------------------
def test_a_read_is_released_after_a_majority_round_and_served_where_applied():
    net = booted(primary="a")
    w = net.write("w1")
    net.settle(between("a", "b"))  # committed on a, b; c has not got it
    read = net.read("r1")
    assert read.index is None  # the round is out
    net.settle(between("a", "b"))
    assert read.index == w.index
    applied = {n: net.replicas[n].applied for n in net.names}
    assert servers(applied, read.index) == ("a", "b")  # the round told b the commit index
    assert not may_serve(net.replicas["c"].applied, read.index)
    net.heartbeat()
    net.settle()
    applied = {n: net.replicas[n].applied for n in net.names}
    assert servers(applied, read.index) == ("a", "b", "c")


def test_a_new_primary_releases_reads_only_after_its_no_op_commits():
    net = Net(ABC)
    net.choose = net.elector.choose = lambda p: "a"
    net.elect()
    net.settle(lambda m: not isinstance(m, Append | AppendReply))  # appointed, no-op not out
    read = net.read("r1")
    net.deliver(lambda m: isinstance(m, Append) and m.to == "b" and not m.entries)
    net.settle(lambda m: m.to == "a")  # b answered the round: a majority, but no no-op yet
    assert read.index is None
    net.settle()
    assert read.index == 1  # the no-op's index


def test_a_deposed_primary_never_releases_a_read():
    net = booted(primary="a")
    net.write("w1")
    net.settle()
    net.choose = net.elector.choose = lambda p: "b"
    net.elect()
    net.deliver(to("b", "c"))
    net.drop(to("a"))
    read = net.read("stale", at="a")
    net.settle()
    assert read.index is None and not net.replicas["a"].is_primary


def test_a_lease_releases_reads_without_a_round():
    net = booted(primary="a")
    read = net.read("r1")
    net.drop()
    net.handle("a", net.replicas["a"].reads_by_lease())
    assert read.index == net.replicas["a"].commit


# ---- the core is pure ------------------------------------------------------------------------
CORE = ("__init__", "log", "messages", "durable", "primary", "election", "reads", "replica",
        "outbox", "wire")


def test_the_core_does_no_io():
    """The rules: the standard library's pure modules and each other (the wire format adds
    pydantic); ``transport.py`` is the package's one module that does I/O."""
    package = Path(__file__).resolve().parent.parent / "services" / "dslab" / "replication"
    assert {m.stem for m in package.glob("*.py")} == {*CORE, "transport"}
    allowed = {"__future__", "collections.abc", "dataclasses", "enum", "typing", "pydantic"}
    for name in CORE:
        tree = ast.parse((package / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                    and not n.level}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert imported <= allowed, (name, imported - allowed)
        relative = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}
        assert relative <= set(CORE), (name, relative)
        assert "__all__" in {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign)
                             for t in n.targets if isinstance(t, ast.Name)}, name


def test_noop_is_the_first_entry_of_every_term():
    net = booted(primary="a")
    net.write("w")
    net.settle()
    net.crash("a")
    net.elect()
    net.settle()
    log = net.replicas[net.primary()].log.entries(1)
    firsts = {}
    for e in log:
        firsts.setdefault(e.term, e)
    assert all(e.command is NOOP for e in firsts.values())
