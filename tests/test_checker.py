"""The history checker on hand-made histories: linearizable ones pass, the anomalies a
replicated store can show are found and shown (pure: no server runs)."""

from __future__ import annotations

import dataclasses
import itertools
import random
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dslab.faults.checks import check, per_second
from dslab.faults.history import History, Kind, Op, Outcome, outcome_of
from dslab.faults.historyfile import HistoryFileError, read_history, write_history
from dslab.faults.linearizable import (
    Linearizable,
    NotLinearizable,
    Undecided,
    check_keys,
    check_register,
    prune,
    register_ops,
)
from dslab.faults.nemesis import FAULTS, Step
from dslab.faults.synthetic import synthetic

OK, FAIL, UNKNOWN = Outcome.OK, Outcome.FAIL, Outcome.UNKNOWN
W, R, INS = Kind.WRITE, Kind.READ, Kind.INSERT


def history(*ops: tuple) -> History:
    """ops: (process, kind, key, value, start, end, outcome)."""
    h = History()
    for op in ops:
        h.add(*op)
    return h


def verdict(*ops: tuple):
    return check_register(1, list(history(*ops)))


def test_a_sequential_register_is_linearizable():
    assert isinstance(verdict((0, W, 1, 1, 0, 1, OK), (1, R, 1, 1, 2, 3, OK),
                              (0, W, 1, 2, 4, 5, OK), (1, R, 1, 2, 6, 7, OK)), Linearizable)


def test_a_read_concurrent_with_a_write_may_see_either_value():
    for seen in (1, 2):
        assert isinstance(verdict((0, W, 1, 1, 0, 1, OK), (0, W, 1, 2, 2, 6, OK),
                                  (1, R, 1, seen, 3, 4, OK)), Linearizable)


def test_a_read_that_goes_back_in_time_is_found_and_shown():
    """The case seen here: version 89 read, then a read that began after it ended returns 88
    (a write applied on one replica and not yet on the next)."""
    v = verdict((0, W, 1, 88, 0, 1, OK), (0, W, 1, 89, 2, 10, OK),
                (1, R, 1, 89, 3, 4, OK), (2, R, 1, 88, 5, 6, OK))
    assert isinstance(v, NotLinearizable)
    assert v.value == 89 and v.written_by is not None and v.written_by.value == 89
    assert [op.value for op in v.stuck if op.kind is R] == [88]
    assert "returned 88" in v.explain() and "held 89" in v.explain()
    # the read that fixed 89 ended before the stale one began: illegal on its face
    assert v.fixed_by is not None and (v.fixed_by.process, v.fixed_by.value) == (1, 89)
    assert v.short() == ("key 1: client 2 read 88 at 5.00-6.00 s, when the register already "
                         "held 89: client 1 read 89 at 3.00-4.00 s")
    assert ("before #3 began, the register held 89 in that order, as this showed:\n"
            "  #2 client 1 read key 1 returned 89") in v.explain()


def test_two_overlapping_reads_may_disagree_while_a_write_is_in_flight():
    """Overlapping reads can be ordered either way around the write: 89 then 88 is an anomaly
    only when the second read began after the first ended."""
    for first, second in ((89, 88), (88, 89)):
        assert isinstance(verdict((0, W, 1, 88, 0, 1, OK), (0, W, 1, 89, 2, 10, OK),
                                  (1, R, 1, first, 3, 5, OK), (2, R, 1, second, 4, 6, OK)),
                          Linearizable)


def test_an_undone_write_that_was_read_is_an_anomaly():
    """A write refused (4xx: it did not happen) whose value a client read anyway."""
    v = verdict((0, W, 1, 1, 0, 1, OK), (0, W, 1, 2, 2, 5, FAIL), (1, R, 1, 2, 3, 4, OK))
    assert isinstance(v, NotLinearizable)
    assert [op.value for op in v.stuck] == [2]


def test_an_unknown_write_may_take_effect_late_or_never():
    late = verdict((0, W, 1, 1, 0, 1, OK), (0, W, 1, 2, 2, 3, UNKNOWN),
                   (1, R, 1, 1, 4, 5, OK), (1, R, 1, 2, 20, 21, OK))
    never = verdict((0, W, 1, 1, 0, 1, OK), (0, W, 1, 2, 2, 3, UNKNOWN),
                    (1, R, 1, 1, 20, 21, OK))
    assert isinstance(late, Linearizable) and isinstance(never, Linearizable)


def test_an_unknown_write_seen_then_unseen_is_an_anomaly():
    """Taking effect is once: read as 2, then a later read of 1 (no write of 1 after)."""
    v = verdict((0, W, 1, 1, 0, 1, OK), (0, W, 1, 2, 2, 3, UNKNOWN),
                (1, R, 1, 2, 4, 5, OK), (1, R, 1, 1, 6, 7, OK))
    assert isinstance(v, NotLinearizable)


def test_a_read_of_nothing_after_an_acknowledged_insert_is_an_anomaly():
    assert isinstance(verdict((0, W, 1, 1, 0, 1, OK), (1, R, 1, None, 2, 3, OK)),
                      NotLinearizable)
    assert isinstance(verdict((1, R, 1, None, 0, 3, OK), (0, W, 1, 1, 1, 2, OK)), Linearizable)


def test_a_value_nobody_wrote_is_an_anomaly():
    assert isinstance(verdict((0, W, 1, 1, 0, 1, OK), (1, R, 1, 7, 2, 3, OK)), NotLinearizable)


def test_the_budget_gives_up_rather_than_guessing():
    """Many overlapping unknown writes, each read later, and a read of a value nobody wrote:
    a budget of a few states decides nothing (unread unknown writes would be pruned)."""
    ops = ([(0, W, 1, v, 0, 1, UNKNOWN) for v in range(12)]
           + [(1, R, 1, v, 50 + 2 * v, 51 + 2 * v, OK) for v in range(12)]
           + [(1, R, 1, 99, 80, 81, OK)])
    assert isinstance(check_register(1, list(history(*ops)), budget=5), Undecided)
    assert isinstance(check_register(1, list(history(*ops))), NotLinearizable)


@given(st.integers(0, 2**32), st.integers(2, 6), st.integers(5, 40))
def test_histories_of_an_atomic_register_are_linearizable(seed, clients, n):
    """Each operation takes effect at one instant inside its interval on a real register;
    some clients' answers are lost (unknown); the checker must always find an order."""
    rng = random.Random(seed)
    events = []
    for k in range(n):
        start = rng.uniform(0, 100)
        end = start + rng.uniform(0, 10)
        events.append((rng.uniform(start, end), start, end, k % clients,
                       W if rng.random() < 0.4 else R))
    value, h, version = None, History(), 0
    for _at, start, end, client, kind in sorted(events):
        if kind is W:
            version += 1
            value = version
            outcome = UNKNOWN if rng.random() < 0.2 else OK
            h.add(client, W, 1, version, start, end, outcome)
        else:
            h.add(client, R, 1, value, start, end, OK)
    assert isinstance(check_register(1, list(h)), Linearizable)


@given(st.integers(0, 2**32))
def test_a_stale_read_after_the_fact_is_always_found(seed):
    """A sequential history with one read, after all else ended, of a value overwritten
    earlier: never linearizable."""
    rng = random.Random(seed)
    h, t = History(), 0.0
    for version in range(1, rng.randint(3, 12)):
        h.add(0, W, 1, version, t, t + 1, OK)
        t += 2
    h.add(1, R, 1, rng.randint(1, version - 1), t, t + 1, OK)
    assert isinstance(check_register(1, list(h)), NotLinearizable)


def test_the_run_check_finds_lost_phantom_and_altered_rows():
    h = history((0, INS, 10, 1, 0, 1, OK), (0, INS, 11, 1, 0, 1, OK), (0, INS, 12, 1, 0, 1, UNKNOWN),
                (0, INS, 13, 1, 0, 1, FAIL), (1, W, 20, 1, 0, 1, OK), (1, W, 20, 2, 2, 3, OK))
    assert check(h, {10: 1, 11: 1, 20: 2}).valid
    assert check(h, {10: 1, 11: 1, 12: 1, 20: 2}).valid  # an unknown insert may have happened
    report = check(h, {10: 1, 20: 2, 99: 1, 11: 5})
    assert [op.key for op in report.lost] == []
    assert report.phantoms == [99] and report.altered == [(11, 5)]
    report = check(h, {11: 1, 20: 1})  # 10 lost; register 20 went back to 1 after the run
    assert [op.key for op in report.lost] == [10]
    assert [a.key for a in report.anomalies] == [20]
    assert "1 acknowledged inserts lost" in report.explain()


def test_outcomes_and_the_timeline():
    assert outcome_of(200) is OK and outcome_of(409) is FAIL and outcome_of(503) is UNKNOWN
    assert outcome_of(None) is UNKNOWN and outcome_of(None, read=True) is FAIL
    h = history((0, INS, 1, 1, 0.1, 0.5, OK), (0, INS, 2, 1, 0.6, 1.2, UNKNOWN),
                (0, INS, 3, 1, 1.3, 1.4, FAIL))
    assert per_second(h) == {0: {"ok": 1}, 1: {"unknown": 1, "fail": 1}}


def test_a_schedule_step_names_a_known_fault():
    assert [Step(0, kind).kind for kind in FAULTS] == list(FAULTS)
    with pytest.raises(ValueError, match="unknown fault 'flood'"):
        Step(0, "flood")
    with pytest.raises(ValueError):
        Step(0, "lossy", share=1.5)


# --- The checker against a brute force -----------------------------------------------------

def brute_force(ops: list[Op], initial: int | None = None) -> bool:
    """Linearizable by trying everything: every subset of the unknown writes with every
    acknowledged op, in every order that keeps an op that ended before another began before
    it (an unknown op never ended), each read returning the last value written before it.
    Refused ops and reads without an answer are no operations. No memo, no reduction."""
    ok = [op for op in ops if op.outcome is OK and op.kind in (W, R)]
    maybe = [op for op in ops if op.outcome is UNKNOWN and op.kind is W]

    def extend(chosen: list[Op], placed: frozenset[int], value: int | None) -> bool:
        if len(placed) == len(chosen):
            return True
        for i, op in enumerate(chosen):
            if i in placed or any(j not in placed and j != i and other.returned < op.start
                                  for j, other in enumerate(chosen)):
                continue
            if op.kind is R and op.value != value:
                continue
            if extend(chosen, placed | {i}, value if op.kind is R else op.value):
                return True
        return False

    return any(extend(ok + list(subset), frozenset(), initial)
               for k in range(len(maybe) + 1) for subset in itertools.combinations(maybe, k))


def random_history(rng: random.Random) -> list[Op]:
    """Up to 8 ops on one key, integer times (so intervals often touch), values 1-3 (so
    several writes share one): half run on an atomic register (unknown writes applied or
    not, refused ones never; failed reads), one read of those changed at random half the
    time; the other half random values throughout."""
    h = History()
    atomic = rng.random() < 0.5
    value: int | None = None
    ops = []
    for _ in range(rng.randint(1, 8)):
        start = rng.randint(0, 10)
        end = start + rng.randint(0, 4)
        ops.append((rng.uniform(start, end), start, end, rng.random() < 0.5))
    for _at, start, end, write in sorted(ops):
        fate = rng.random()
        if write:
            outcome = UNKNOWN if fate < 0.35 else FAIL if fate < 0.5 else OK
            written = rng.randint(1, 3)
            if outcome is OK or (outcome is UNKNOWN and rng.random() < 0.5):
                value = written
            h.add(rng.randint(0, 2), W, 1, written, start, end, outcome)
        else:
            outcome = FAIL if fate < 0.15 else OK
            seen = value if atomic else rng.choice([None, 1, 2, 3])
            h.add(rng.randint(3, 5), R, 1, seen if outcome is OK else None, start, end, outcome)
    result = list(h)
    reads = [n for n, op in enumerate(result) if op.kind is R and op.outcome is OK]
    if atomic and reads and rng.random() < 0.5:
        n = rng.choice(reads)
        result[n] = dataclasses.replace(result[n], value=rng.choice([None, 1, 2, 3]))
    rng.shuffle(result)  # the checker takes ops in any order
    return result


def test_the_checker_agrees_with_a_brute_force_on_small_histories():
    rng = random.Random(20261207)
    verdicts: Counter[bool] = Counter()
    for _ in range(3000):
        ops = random_history(rng)
        verdict = check_register(1, ops)
        assert not isinstance(verdict, Undecided)
        expected = brute_force(ops)
        assert isinstance(verdict, Linearizable) == expected, "\n".join(
            op.describe() for op in sorted(ops, key=lambda o: o.start))
        verdicts[expected] += 1
    assert min(verdicts.values()) > 600, verdicts  # both verdicts well exercised


def test_an_unread_unknown_write_is_pruned_and_a_read_value_keeps_every_write_of_it():
    ops = list(history((0, W, 1, 1, 0, 1, UNKNOWN), (0, W, 1, 2, 0, 1, UNKNOWN),
                       (1, W, 1, 2, 0, 1, UNKNOWN), (2, R, 1, 2, 3, 4, OK),
                       (2, R, 1, 5, 3, 4, FAIL)))
    assert [(op.value, op.process) for op in prune(ops)] == [(2, 0), (2, 1), (2, 2), (5, 2)]


# --- Histories like a run's ------------------------------------------------------------

@pytest.mark.parametrize("unknown", [0.05, 0.1, 0.2])
@pytest.mark.parametrize("writers", [1, 2])
def test_histories_of_hundreds_of_ops_are_decided(unknown, writers):
    """600 ops on one key, several readers: linearizable ones pass and an injected stale
    read is found, within the default state budget, whatever share of writes is unknown."""
    for seed in range(3):
        for stale in (None, 0.5, 0.9):
            h = synthetic(keys=1, ops=600, readers=2, unknown=unknown, stale=stale, seed=seed,
                          writers=writers)
            assert sum(op.outcome is UNKNOWN for op in h) > 0
            [(key, ops)] = register_ops(h).items()
            verdict = check_register(key, ops)
            assert isinstance(verdict, Linearizable if stale is None else NotLinearizable)


def test_a_run_of_twenty_thousand_ops_over_eight_keys_is_decided():
    """The size a long A-5 run records (bench/bench_checker.py times it): each key decided,
    and the one stale read found with the read that shows it, before it, on its face."""
    for stale in (None, 0.5):
        h = synthetic(keys=8, ops=20_000, unknown=0.15, stale=stale, seed=7)
        verdicts = check_keys(h)
        assert len(verdicts) == 8
        found = [v for v in verdicts.values() if isinstance(v, NotLinearizable)]
        assert [type(v) for v in verdicts.values()].count(Linearizable) == 8 - len(found)
        assert len(found) == (0 if stale is None else 1)
        for v in found:
            stuck = v.stuck_op
            assert stuck is not None and v.fixed_by is not None
            assert v.fixed_by.returned < stuck.start and v.fixed_by.value != stuck.value


def test_a_tiny_budget_is_undecided_never_linearizable():
    h = synthetic(keys=1, ops=3000, seed=1)
    [(key, ops)] = register_ops(h).items()
    assert isinstance(check_register(key, ops), Linearizable)
    verdict = check_register(key, ops, budget=10)
    assert isinstance(verdict, Undecided) and verdict.states == 10 and verdict.spent == "states"
    verdict = check_register(key, ops, out_of_time=lambda: True)  # the clock is read every 1024 states
    assert isinstance(verdict, Undecided) and verdict.spent == "seconds"
    assert all(isinstance(v, Undecided) for v in check_keys(h, out_of_time=lambda: True).values())


# --- Histories as files, and the command ---------------------------------------------------

def test_a_history_survives_a_file_in_any_order(tmp_path):
    h = history((0, W, 7, 1, 0.0, 0.125, OK), (1, R, 7, None, 0.1, 0.2, OK),
                (0, W, 7, 2, 0.3, 10.3, UNKNOWN), (2, R, 7, 2, 0.5, 0.6, FAIL),
                (3, INS, 9, 1, 1 / 3, 2.0, OK))
    h.ops[2] = dataclasses.replace(h.ops[2], detail="TimeoutError")
    path = tmp_path / "h.jsonl"
    write_history(h, path)
    assert [dataclasses.astuple(op) for op in read_history(path)] == \
        [dataclasses.astuple(op) for op in h]
    big = synthetic(keys=2, ops=400, stale=0.5, seed=3)
    write_history(big, path)
    lines = path.read_text().splitlines()
    random.Random(1).shuffle(lines)
    path.write_text("\n".join(lines) + "\n\n")  # any order; a blank line is skipped
    shuffled = read_history(path)
    assert sorted(repr(dataclasses.astuple(op)[1:]) for op in shuffled) == \
        sorted(repr(dataclasses.astuple(op)[1:]) for op in big)
    assert {k: type(v) for k, v in check_keys(shuffled).items()} == \
        {k: type(v) for k, v in check_keys(big).items()}


GOOD = '{"process": 3, "op": "write", "key": 15659, "value": 175, "start": 26.15, "end": 26.3, "outcome": "ok"}'


@pytest.mark.parametrize(("line", "says"), [
    ("{not json", "Invalid JSON"),
    (GOOD.replace('"process": 3', '"process": "3"'), "process: Input should be a valid integer"),
    (GOOD.replace('"write"', '"delete"'), "op: Input should be 'write', 'read' or 'insert'"),
    (GOOD.replace('"ok"', '"info"'), "outcome: Input should be 'ok', 'fail' or 'unknown'"),
    (GOOD.replace('"end": 26.3', '"end": 26.0'), "end 26.0 is before start 26.15"),
    (GOOD.replace('"value": 175', '"value": null'), "a write's value is the version written"),
    (GOOD.replace(', "outcome": "ok"', ''), "outcome: Field required"),
    (GOOD.replace('"ok"}', '"ok", "vaule": 1}'), "vaule: Extra inputs are not permitted"),
    ('[1, 2]', "Input should be an object"),
])
def test_a_malformed_line_is_named(tmp_path, line, says):
    path = tmp_path / "h.jsonl"
    path.write_text(f"{GOOD}\n\n{line}\n")
    with pytest.raises(HistoryFileError, match="line 3: ") as caught:
        read_history(path)
    assert says in str(caught.value)


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dslab.faults.check", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_the_command_exits_by_the_verdict(tmp_path):
    good, bad, broken = tmp_path / "good.jsonl", tmp_path / "bad.jsonl", tmp_path / "broken.jsonl"
    write_history(synthetic(keys=3, ops=900, seed=4), good)
    write_history(synthetic(keys=3, ops=900, stale=0.5, seed=4), bad)
    broken.write_text(GOOD + "\n" + GOOD.replace("15659", "15659.5") + "\n")

    run = cli(good)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("linearizable (") == 3
    assert "3 register keys, 900 operations" in run.stdout and "3 linearizable, 0 not" in run.stdout

    run = cli(bad, "--budget", 60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "NOT linearizable" in run.stdout and "none of these could come next" in run.stdout
    assert "when the register already held" in run.stdout

    run = cli(good, "--states", 2)
    assert run.returncode == 2 and "undecided: the state budget ran out" in run.stdout

    for path in (broken, tmp_path / "missing.jsonl"):
        run = cli(path)
        assert run.returncode == 2 and "Traceback" not in run.stderr
        assert run.stderr.startswith("error: ")
    assert "line 2: key: Input should be a valid integer" in cli(broken).stderr


# --- The anomaly drawn -------------------------------------------------------------------

def test_the_anomaly_is_drawn_with_what_shows_it():
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure

    from dslab.lab import anomalyplot

    ops = list(history((0, W, 1, 88, 0, 1, OK), (0, W, 1, 89, 2, 10, OK),
                       (1, R, 1, 89, 3, 4, OK), (2, R, 1, 88, 5, 6, OK),
                       (3, R, 1, 89, 40, 41, OK), (3, W, 2, 5, 5, 6, OK)))
    v = check_register(1, [op for op in ops if op.key == 1])
    assert isinstance(v, NotLinearizable)
    ax = Figure(figsize=(6, 2)).subplots()
    anomalyplot.plot_anomaly(ax, v, ops, window=5)
    labels = {t.get_text(): t.get_fontweight() for t in ax.texts}
    assert labels["r88"] == "bold" and labels["r89"] == "bold"  # stuck, and fixed the value
    assert "w88" in labels and "w5" not in labels  # another key's op is not drawn
    assert sorted(t.get_text() for t in ax.texts if t.get_text().startswith("r")) == \
        ["r88", "r89"]  # the read of 89 40 s later is not drawn
    outlined = {(round(p.get_x()), to_rgba(p.get_edgecolor())) for p in ax.patches}
    assert (5, to_rgba(anomalyplot.STUCK)) in outlined and (3, to_rgba(anomalyplot.FIXED)) in outlined
    assert [t.get_text() for t in ax.get_yticklabels()] == ["client 0", "client 1", "client 2"]
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {
        "could not come next", "fixed the value held", "write unknown"}
    assert "after" not in ax.get_title() and "read 88" in ax.get_title()
