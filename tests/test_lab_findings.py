"""The Part 2 capacity model and the findings computed from the runs (pure: no stack)."""

from __future__ import annotations

import random

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dslab.db.seed import seed_init
from dslab.lab import db, dbfindings, shares
from dslab.lab.cpu import summary
from dslab.ring import make_ring
from dslab.ring.analysis import assign


def status_of(body: dict) -> dict:
    """What /status reads back for an /init body that names its servers."""
    return {"N": body["N"], "shards": body["shards"], "servers": body["servers"]}


SEED = status_of(seed_init())
ALL_ON_ALL = {"N": 2, "shards": SEED["shards"],
              "servers": {"A": ["sh1", "sh2", "sh3", "sh4"], "B": ["sh1", "sh2", "sh3", "sh4"]}}
SEVEN = {"N": 7, "shards": SEED["shards"],
         "servers": {f"S{i}": ["sh1", "sh2", "sh3", "sh4"] for i in range(7)}}  # A-2's shape


def test_write_shares_count_the_rows_of_every_shard_a_server_holds():
    weights = shares.shard_weights(SEED["shards"])
    assert weights == {"sh1": .25, "sh2": .25, "sh3": .25, "sh4": .25}
    per_server = shares.write_shares(SEED["servers"], weights)
    assert per_server == {name: .25 * len(held) for name, held in SEED["servers"].items()}
    # Everyone holds everything: every server journals every row.
    assert shares.write_shares(ALL_ON_ALL["servers"], weights) == {"A": 1.0, "B": 1.0}


def test_shard_weights_follow_sizes_or_go_all_to_the_hot_shard():
    sized = [{"Shard_id": "a", "Shard_size": 100}, {"Shard_id": "b", "Shard_size": 300}]
    assert shares.shard_weights(sized) == {"a": .25, "b": .75}
    assert shares.shard_weights(sized, hot="b") == {"a": 0.0, "b": 1.0}


def first_takes_half(holders, shard=""):
    """An uneven stand-in for a ring: the first holder half of the shard, the rest share the
    other half (one holder: all of it)."""
    if len(holders) == 1:
        return {holders[0]: 1.0}
    return {name: 0.5 if k == 0 else 0.5 / (len(holders) - 1) for k, name in enumerate(holders)}


@given(st.dictionaries(st.sampled_from([f"S{i}" for i in range(6)]),
                       st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, unique=True),
                       min_size=1))
def test_read_shares_weigh_each_shard_by_its_split_among_its_holders(placement):
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    got = shares.read_shares(placement, weights, first_takes_half)
    # The same sum computed the other way round: per server, over the shards it holds.
    for name, held in placement.items():
        expected = 0.0
        for shard in held:
            holders = sorted(n for n, h in placement.items() if shard in h)
            expected += weights[shard] * first_takes_half(holders)[name]
        assert got[name] == pytest.approx(expected)
    held_shards = {shard for h in placement.values() for shard in h}
    assert sum(got.values()) == pytest.approx(sum(weights[s] for s in held_shards))
    assert set(got) == set(placement)


def test_read_shares_by_hand():
    got = shares.read_shares({"A": ["a", "b"], "B": ["a"]}, {"a": 0.5, "b": 0.3},
                             first_takes_half)
    assert got == pytest.approx({"A": 0.5 * 0.5 + 0.3, "B": 0.5 * 0.5})
    # Three holders of one shard: the first half, the two others a quarter each.
    got = shares.read_shares({"X": ["a"], "Y": ["a"], "Z": ["a"]}, {"a": 1.0}, first_takes_half)
    assert got == pytest.approx({"X": 0.5, "Y": 0.25, "Z": 0.25})


def test_ring_shares_are_what_the_balancers_ring_gives_other_random_ids():
    holders = ["S1", "S2", "S3"]
    got = shares.ring_shares(holders, n_ids=5000)
    ring = make_ring("ring", "blake2b")  # the Part 2 balancer's default ring, unsalted
    for name in holders:
        ring.add(name)
    rng = random.Random(7)
    owners = assign(ring, [rng.randint(0, 999999) for _ in range(5000)])
    for name in holders:
        assert got[name] == pytest.approx(owners.count(name) / 5000, abs=0.03)
    assert sum(got.values()) == pytest.approx(1.0)


def test_the_busiest_server_of_a_hot_shard_carries_more_than_of_all_shards():
    assert dbfindings.busiest_share(SEED, "hot read") > dbfindings.busiest_share(SEED, "read")
    # Where every server holds every shard, each shard's ring is salted with its id, so the
    # shards put different servers first and reads of all of them spread wider than of one.
    assert dbfindings.busiest_share(SEVEN, "read") < dbfindings.busiest_share(SEVEN, "hot read")
    assert dbfindings.busiest_share(SEED, "write") == 0.5
    assert dbfindings.hot_shard(SEED) == "sh1"


def test_read_jobs_stay_in_their_range():
    jobs = db.read_jobs("hot read", 500, 4096, 8192, 10, random.Random(0))
    bounds = [(j[2]["Stud_id"]["low"], j[2]["Stud_id"]["high"]) for j in jobs]
    assert len(jobs) == 500 and all(4096 <= lo and hi <= 8191 and hi - lo == 9 for lo, hi in bounds)
    assert min(lo for lo, _ in bounds) < 4200 and max(hi for _, hi in bounds) > 8080


def test_cpu_summary_names_the_busiest_server_against_its_cap():
    usage = pd.DataFrame([("balancer", "balancer", .2), ("client", "client", .1),
                          ("metadata engine", "metadata engine", .05),
                          ("server", "S1", .03), ("engine", "S1", .06),
                          ("server", "S2", .04)],
                         columns=["role", "part", "cores"])
    got = summary(usage, 0.1)
    # A server and its engine are one server against one quota.
    assert got["servers"] == pytest.approx(.13) and got["busiest server"] == pytest.approx(.09)
    assert got["busiest of cap"] == pytest.approx(.9) and got["balancer"] == .2
    assert pd.isna(summary(usage, None)["busiest of cap"])


# --- observations: a sentence stating an effect only when the numbers show it ---------------

CAPPED = "capped at 0.1 core per server"


def tables(rates: dict[tuple[str, str, str], float], busiest_of_cap: float = 0.98,
           balancer: float = 0.1, servers: float = 0.5):
    """Two repeats of every (world, config, kind) at ``rates`` (±1%), and CPU rows."""
    speed, cpu = [], []
    for (world, config, kind), rate in rates.items():
        for repeat, wobble in ((1, 0.99), (2, 1.01)):
            speed.append({"world": world, "config": config, "repeat": repeat, "kind": kind,
                          "per_s": rate * wobble, "p50_ms": 1.0, "p99_ms": 2.0, "failed": 0})
            capped = world != "uncapped"
            cpu.append({"world": world, "config": config, "repeat": repeat, "kind": kind,
                        "cap": 0.1 if capped else float("nan"), "balancer": balancer,
                        "metadata engine": 0.0, "client": 0.1, "servers": servers,
                        "busiest server": 0.1 * busiest_of_cap if capped else 0.3,
                        "busiest of cap": busiest_of_cap if capped else float("nan")})
    return pd.DataFrame(speed), pd.DataFrame(cpu)


CONFIGURED = {"base": SEED, "variant": SEVEN}


def predicted(kind: str) -> float:
    return (dbfindings.busiest_share(SEED, kind) / dbfindings.busiest_share(SEVEN, kind))


def test_observations_say_grew_as_predicted_only_when_it_did():
    p = predicted("hot read")
    assert p > 1.15  # seven servers hold sh1 instead of three
    rates = {(CAPPED, "base", "write"): 100, (CAPPED, "variant", "write"): 100 * predicted("write"),
             (CAPPED, "base", "hot read"): 100, (CAPPED, "variant", "hot read"): 100 * p}
    text = dbfindings.observations(*tables(rates), CONFIGURED, "base", "variant")
    assert "reads of one hot shard grew as predicted" in text
    assert "Writes fell as predicted" in text
    assert "the servers, not the balancer, set the pace" in text

    rates[(CAPPED, "variant", "hot read")] = 80  # it fell where the model says it grows
    text = dbfindings.observations(*tables(rates), CONFIGURED, "base", "variant")
    assert "grew as predicted" not in text
    assert "reads of one hot shard fell where the model predicted it grew" in text

    rates[(CAPPED, "variant", "hot read")] = 100 * p * 2  # grew, twice as much as predicted
    text = dbfindings.observations(*tables(rates), CONFIGURED, "base", "variant")
    assert "reads of one hot shard grew in the predicted direction, not by the predicted amount" in text

    # Near the prediction, on the other side of a threshold: "near", not "as predicted".
    predicted_reads = predicted("read")
    # Salted rings: the seven servers share reads anywhere wider than three do, a predicted
    # growth (unsalted, every shard's ring put the same server first: a predicted fall).
    assert 1.15 <= predicted_reads < 1.45
    rates[(CAPPED, "base", "read")], rates[(CAPPED, "variant", "read")] = 100, 110
    text = dbfindings.observations(*tables(rates), CONFIGURED, "base", "variant")
    assert f"reads anywhere hardly changed, near the predicted {predicted_reads:.2f}×" in text


def test_observations_blame_the_servers_only_when_they_are_at_their_quota():
    rates = {(CAPPED, "base", "write"): 100}
    assert "set the pace" not in dbfindings.observations(
        *tables(rates, busiest_of_cap=0.5), CONFIGURED, "base")
    assert "set the pace" not in dbfindings.observations(
        *tables(rates, balancer=0.9), CONFIGURED, "base")
    assert "set the pace" in dbfindings.observations(*tables(rates), CONFIGURED, "base")


def test_observations_say_contention_only_when_the_cores_are_busy():
    rates = {("uncapped", "base", "read"): 900}
    busy = dbfindings.observations(*tables(rates, servers=1.6), CONFIGURED, "base", cores=2)
    idle = dbfindings.observations(*tables(rates, servers=0.3), CONFIGURED, "base", cores=2)
    assert "adds contention, not capacity" in busy and "contention" not in idle
    assert "predicted" not in busy  # the model is stated for capped servers only


def test_observations_name_the_ring_skew_only_where_there_is_one():
    rates = {(CAPPED, "base", "read"): 300, (CAPPED, "variant", "read"): 200}
    said = []
    for variant in (SEVEN, ALL_ON_ALL):
        share = dbfindings.busiest_share(variant, "read")
        even = 1 / len(variant["servers"])
        text = dbfindings.observations(*tables(rates), {"base": SEED, "variant": variant},
                                       "base", "variant")
        said.append("the shards' rings, not the servers, limit" in text)
        assert (share > 1.2 * even) == said[-1]
    assert said[0]  # seven servers on rings of 9 virtual nodes each: a skew to speak of


# --- the tour and a kill and refill ------------------------------------------------------

ERROR = '{"message": "<Error> nope", "status": "failure"}'


def refill_result(new_rows=(500, 510), replacement_shards=("sh1", "sh2"), other=500):
    counts = [("Server0", "sh1", 500), ("Server0", "sh2", 510), ("Server3", "sh1", 500),
              ("Server1", "sh2", 510)]
    after = [("Server9", "sh1", new_rows[0]), ("Server9", "sh2", new_rows[1]),
             ("Server3", "sh1", other), ("Server1", "sh2", 510)]
    frame = lambda rows: pd.DataFrame(rows, columns=["server", "shard", "rows"])  # noqa: E731
    return {"victim": "Server0", "victim_shards": ["sh1", "sh2"], "replacement": "Server9",
            "replacement_shards": list(replacement_shards), "seconds": 1.23,
            "before": frame(counts), "after": frame(after)}


def tour(*answers):
    return pd.DataFrame(answers, columns=["status", "response"])


def test_a4_text_states_a_clean_refill_as_such():
    text = dbfindings.refill(tour((200, "{}"), (400, ERROR), (404, ERROR)), refill_result())
    assert "The tour made 3 requests: 1 succeeded and 2 were refused (400, 404)." in text
    assert "Every refusal is in the contract's error shape." in text
    assert "1.2 s after its SIGKILL, /status listed **Server9** with the same shards." in text
    assert "Server9 holds 500 rows of sh1 (Server0 had 500), 510 rows of sh2 (Server0 had 510)." in text
    assert "Every replica of every shard holds the same number of rows." in text
    assert "**" not in text.replace("**Server9**", "")  # nothing flagged


def test_a4_text_flags_what_went_wrong_and_claims_nothing_it_did_not_see():
    text = dbfindings.refill(tour((200, "{}"), (400, "oops"), (409, ERROR)),
                             refill_result(new_rows=(499, 510), replacement_shards=("sh1",),
                                           other=499))
    assert "**1 refusal(s) are not in the contract's error shape**: oops" in text
    assert "Every refusal" not in text
    assert "with sh1: **not the same shards**." in text
    assert "**The rows of sh1 differ from what Server0 held.**" in text
    text = dbfindings.refill(tour((200, "{}")), refill_result(other=480))
    assert "0 were refused." in text and "error shape" not in text
    assert "**The replicas of sh1 hold different numbers of rows.**" in text
