"""The pure parts of hardening: what a fan-out's answers mean, the engine's errors translated,
the engine's limits checked before anything is stored, request ids of any length."""

from __future__ import annotations

import bson
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from pymongo.errors import (
    BulkWriteError,
    DuplicateKeyError,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from dslab.common.engine_errors import engine_errors
from dslab.common.errors import ApiError, BadRequest, Conflict, Unavailable
from dslab.common.limits import INT64_MAX, INT64_MIN, chunks
from dslab.common.payload import parse_json_object
from dslab.contract.studdb import InitRequest, Schema, ShardReadRequest, ShardSpec, validate_row
from dslab.db.fanout import ServerRefused, classify
from dslab.db.seed import seed_init
from dslab.keeper.upstream import UpstreamClosed
from dslab.ring import request_number

UNREACHABLE = (UpstreamClosed, OSError)
SCHEMA = Schema.model_validate({"columns": ["Stud_id", "Stud_name", "Stud_marks"],
                                "dtypes": ["Number", "String", "Number"]})


# ---- fan-out ------------------------------------------------------------------------------------
def test_a_replica_that_could_not_be_reached_is_evicted():
    out = classify(["A", "B", "C"], [{}, UpstreamClosed("gone"), {}], UNREACHABLE)
    assert out.applied == ["A", "C"]
    assert [name for name, _ in out.to_evict()] == ["B"]
    assert out.refusal() is None


def test_a_replica_that_refuses_what_the_others_applied_is_out_of_step():
    out = classify(["A", "B"], [{}, ServerRefused("B", 503, "<Error> engine down")], UNREACHABLE)
    assert [name for name, _ in out.to_evict()] == ["B"]
    assert out.refusal() is None


@pytest.mark.parametrize("status, expected", [(400, 400), (409, 409), (503, 503), (500, 503)])
def test_a_write_every_replica_refuses_evicts_nobody(status, expected):
    refusals = [ServerRefused(n, status, f"<Error> {n} says no") for n in ("A", "B", "C")]
    out = classify(["A", "B", "C"], refusals, UNREACHABLE)
    assert out.applied == [] and out.to_evict() == []
    answer = out.refusal()
    assert isinstance(answer, ApiError) and answer.status == expected
    assert answer.message == "<Error> A says no"


def test_an_unexpected_exception_in_a_fan_out_is_raised_not_swallowed():
    with pytest.raises(KeyError):
        classify(["A"], [KeyError("bug")], UNREACHABLE)


# ---- the engine's errors ------------------------------------------------------------------------
@pytest.mark.parametrize("raised, expected", [
    (lambda: bson.encode({"x": 1 << 63}), BadRequest),
    (lambda: bson.encode({"x": "\ud800"}), BadRequest),
    (lambda: bson.encode({"$x\x00": 1}), BadRequest),
    (lambda: (_ for _ in ()).throw(DuplicateKeyError("E11000 duplicate key", 11000)), Conflict),
    (lambda: (_ for _ in ()).throw(BulkWriteError({"writeErrors": [
        {"code": 11000, "errmsg": "dup"}]})), Conflict),
    (lambda: (_ for _ in ()).throw(BulkWriteError({"writeErrors": [
        {"code": 10334, "errmsg": "too large"}]})), BadRequest),
    (lambda: (_ for _ in ()).throw(ServerSelectionTimeoutError("no engine")), Unavailable),
    (lambda: (_ for _ in ()).throw(NetworkTimeout("slow")), Unavailable),
    (lambda: (_ for _ in ()).throw(OperationFailure("odd", 8000)), Unavailable),
])
def test_engine_errors_become_the_contracts(raised, expected):
    with pytest.raises(expected) as err, engine_errors("Writing sh1"):
        raised()
    assert err.value.message.startswith("<Error> Writing sh1: ")
    assert err.value.__cause__ is not None  # raise ... from: the engine's error is kept


# ---- limits -------------------------------------------------------------------------------------
def row(**changes):
    return {"Stud_id": 1, "Stud_name": "A", "Stud_marks": 1, **changes}


@pytest.mark.parametrize("good", [
    row(Stud_id=INT64_MAX), row(Stud_id=INT64_MIN), row(Stud_marks=INT64_MAX),
    row(Stud_marks=1e308), row(Stud_marks=-0.0), row(Stud_name="é" * 1000 + "\x00"),
])
def test_values_the_engine_stores_are_accepted(good):
    assert validate_row(SCHEMA, good) == good


@pytest.mark.parametrize("bad, fragment", [
    (row(Stud_id=INT64_MAX + 1), "Stud_id must be an integer"),
    (row(Stud_id=INT64_MIN - 1), "Stud_id must be an integer"),
    (row(Stud_marks=1 << 63), "Stud_marks must be a Number"),
    (row(Stud_marks=-(1 << 64)), "Stud_marks must be a Number"),
    (row(Stud_marks=float("nan")), "Stud_marks must be a Number"),
    (row(Stud_marks=float("inf")), "Stud_marks must be a Number"),
    (row(Stud_marks={"$gt": 1}), "Stud_marks must be a Number"),
    (row(Stud_name="\ud800"), "Stud_name must be a String"),
    (row(Stud_name=["a"]), "Stud_name must be a String"),
    (row(Stud_id=10 ** 4000), "an integer of"),
])
def test_values_the_engine_cannot_store_are_a_400_that_says_why(bad, fragment):
    with pytest.raises(BadRequest) as err:
        validate_row(SCHEMA, bad)
    assert fragment in err.value.message
    assert len(err.value.message) < 300  # a 4 000-digit id is not echoed back


@pytest.mark.parametrize("column", ["$where", "a.b", "_id", "", "x\x00", "\udc80", "c" * 65])
def test_column_names_the_engine_cannot_use_are_refused(column):
    with pytest.raises(ValidationError):
        Schema.model_validate({"columns": ["Stud_id", column], "dtypes": ["Number", "String"]})


@pytest.mark.parametrize("spec", [
    {"Stud_id_low": 1 << 63, "Shard_id": "s", "Shard_size": 1},
    {"Stud_id_low": INT64_MAX, "Shard_id": "s", "Shard_size": 2},
    {"Stud_id_low": 0, "Shard_id": "s", "Shard_size": 1 << 64},
])
def test_shards_past_the_largest_stud_id_are_refused(spec):
    with pytest.raises(ValidationError):
        ShardSpec.model_validate(spec)
    with pytest.raises(ValidationError):
        InitRequest.model_validate(seed_init(shards=[spec], servers=None, N=1))


def test_the_last_possible_shard_is_accepted():
    spec = ShardSpec.model_validate({"Stud_id_low": INT64_MAX, "Shard_id": "s", "Shard_size": 1})
    assert spec.Stud_id_low == INT64_MAX


def test_a_shard_server_refuses_read_bounds_past_64_bits():
    with pytest.raises(ValidationError):
        ShardReadRequest.model_validate({"shard": "sh1", "Stud_id": {"low": 0, "high": 1 << 63}})


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000])
def test_json_nested_too_deeply_is_a_400(body):
    with pytest.raises(BadRequest):
        parse_json_object(body)


# ---- request ids --------------------------------------------------------------------------------
def test_request_ids_of_any_length_route():
    assert request_number("132574") == 132574
    assert request_number("9" * 18) == int("9" * 18)
    long_id = "7" * 5000
    assert request_number(long_id) == request_number(long_id) < 1 << 64
    assert request_number(long_id) != request_number("7" * 4999)
    assert request_number("x" * 100_000) < 1 << 64


@given(st.lists(st.integers(0, 3000), max_size=60), st.integers(1, 7), st.integers(50, 5000))
def test_chunks_keep_the_order_and_each_fits_a_request(sizes, max_rows, max_bytes):
    rows = [{"Stud_id": k, "Stud_name": "x" * size} for k, size in enumerate(sizes)]
    parts = list(chunks(rows, max_rows, max_bytes))
    assert [r for part in parts for r in part] == rows
    for part in parts:
        assert 1 <= len(part) <= max_rows
        assert len(part) == 1 or sum(len(orjson.dumps(r)) for r in part) <= max_bytes
