"""Payload validation of POST /add and DELETE /rm, as pure functions."""

from __future__ import annotations

import json

import pytest

from dslab.balancer.validation import parse_add, parse_rm
from dslab.common.errors import BadRequest


def body(obj) -> bytes:
    return json.dumps(obj).encode()


def test_valid_payloads_parse():
    request = parse_add(body({"n": 4, "hostnames": ["S5", "S4", "S10", "S11"]}))
    assert request.n == 4 and request.hostnames == ["S5", "S4", "S10", "S11"]
    assert parse_rm(body({"n": 2})).hostnames == []


@pytest.mark.parametrize("parse, message", [
    (parse_add, "<Error> Length of hostname list is more than newly added instances"),
    (parse_rm, "<Error> Length of hostname list is more than removable instances"),
])
def test_too_many_hostnames_gives_the_contracts_exact_message(parse, message):
    with pytest.raises(BadRequest) as err:
        parse(body({"n": 2, "hostnames": ["S5", "S4", "S10", "S11"]}))
    assert err.value.message == message and err.value.status == 400


@pytest.mark.parametrize("raw, fragment", [
    (b"not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (body({}), "n: Field required"),
    (body({"n": "2"}), "n: Input should be a valid integer"),
    (body({"n": 2.0}), "n: Input should be a valid integer"),
    (body({"n": True}), "n: Input should be a valid integer"),
    (body({"n": -1}), "n: Input should be greater than or equal to 1"),
    (body({"n": 0}), "n: Input should be greater than or equal to 1"),
    (body({"n": 1, "hostnames": "S5"}), "hostnames: Input should be a valid list"),
    (body({"n": 1, "hostnames": [5]}), "hostnames.0: Input should be a valid string"),
    (body({"n": 1, "hostnames": ["bad name"]}), "'bad name' is not a valid hostname"),
    (body({"n": 1, "hostnames": ["-x"]}), "'-x' is not a valid hostname"),
    (body({"n": 1, "hostnames": ["a" * 64]}), "is not a valid hostname"),
    (body({"n": 1, "hostname": ["S5"]}), "hostname: Extra inputs are not permitted"),
    (body({"n": 2, "hostnames": ["S5", "s5"]}), "Duplicate hostnames in request: s5"),
])
@pytest.mark.parametrize("parse", [parse_add, parse_rm])
def test_bad_payloads_are_400_with_a_reason(parse, raw, fragment):
    with pytest.raises(BadRequest) as err:
        parse(raw)
    assert err.value.status == 400
    assert err.value.message.startswith("<Error> ")
    assert fragment in err.value.message
