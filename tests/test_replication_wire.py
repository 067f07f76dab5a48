"""The protocol on the wire (JSON both ways, bad input refused) and the primary's outbox
merging what waits for a peer: pure, no I/O."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dslab.replication import (
    Append,
    AppendReply,
    Appoint,
    AppointReply,
    Entry,
    LogPosition,
    Promise,
    PromiseReply,
)
from dslab.replication.outbox import coalesce
from dslab.replication.wire import WireError, decode, encode

names = st.sampled_from(["Server1", "Server2", "balancer"])
counts = st.integers(min_value=0, max_value=2**40)
commands = st.one_of(st.none(), st.text(max_size=30))


@st.composite
def appends(draw):
    prev = draw(counts)
    term = draw(counts)
    entries = tuple(Entry(draw(st.integers(0, term)), prev + i, draw(commands))
                    for i in range(1, draw(st.integers(0, 4)) + 1))
    return Append(term, draw(names), draw(names), prev, draw(counts), entries, draw(counts),
                  draw(counts))


messages = st.one_of(
    st.builds(Promise, counts, names, names),
    st.builds(PromiseReply, counts, names, names, counts, st.booleans(),
              st.builds(LogPosition, counts, counts)),
    st.builds(Appoint, counts, names, names, st.lists(names, max_size=3).map(tuple)),
    st.builds(AppointReply, counts, names, names, counts, st.booleans()),
    appends(),
    st.builds(AppendReply, counts, names, names, st.booleans(), counts, counts, counts, counts),
)


@given(messages)
def test_every_message_survives_the_wire(message):
    assert decode(json.loads(json.dumps(encode(message)))) == message


@pytest.mark.parametrize("doc, why", [
    ([], "kind"),
    ({"kind": "Elect"}, "kind"),
    ({"kind": "Promise", "term": 1, "src": "a"}, "to"),
    ({"kind": "Promise", "term": -1, "src": "a", "to": "b"}, "negative"),
    ({"kind": "Append", "term": 1, "src": "a", "to": "b", "prev_index": 3, "prev_term": 1,
      "entries": [{"term": 1, "index": 5}], "commit": 0}, "one by one"),
    ({"kind": "Append", "term": 1, "src": "a", "to": "b", "prev_index": 0, "prev_term": 0,
      "entries": [{"term": 1, "index": 1, "command": {"insert": []}}], "commit": 0}, "command"),
    ({"kind": "Append", "term": 1, "src": "a", "to": "b", "prev_index": 0, "prev_term": 0,
      "entries": [{"term": 1, "index": 1, "command": 7}], "commit": 0}, "string"),
])
def test_what_is_not_a_message_is_refused_saying_why(doc, why):
    with pytest.raises(WireError, match=why):
        decode(doc)


def entries(term: int, first: int, last: int) -> tuple[Entry, ...]:
    return tuple(Entry(term, i, f"c{i}") for i in range(first, last + 1))


def test_appends_that_continue_each_other_go_as_one():
    a = Append(2, "P", "S", 4, 1, entries(2, 5, 6), commit=4, round=1)
    b = Append(2, "P", "S", 6, 2, entries(2, 7, 9), commit=6, round=1)
    heartbeat = Append(2, "P", "S", 9, 2, (), commit=9, round=3)
    assert coalesce([a, b, heartbeat]) == [
        Append(2, "P", "S", 4, 1, entries(2, 5, 9), commit=9, round=3)]


def test_what_does_not_continue_stays_apart_in_order():
    a = Append(2, "P", "S", 4, 1, entries(2, 5, 6), commit=4)
    resent = Append(2, "P", "S", 2, 1, entries(2, 3, 6), commit=4)  # a heartbeat's resend
    newer_term = Append(3, "P", "S", 6, 2, entries(3, 7, 7), commit=6)
    reply = AppendReply(2, "P", "S", True, 6)
    queued = [a, resent, newer_term, reply]
    assert coalesce(queued) == queued


@given(st.lists(st.integers(1, 3), min_size=1, max_size=8))
def test_merged_appends_carry_every_entry_once_in_order(sizes):
    queued, prev = [], 10
    for size in sizes:
        queued.append(Append(4, "P", "S", prev, 4, entries(4, prev + 1, prev + size), prev))
        prev += size
    [merged] = coalesce(queued)
    assert merged.prev_index == 10 and [e.index for e in merged.entries] == list(range(11, prev + 1))
    assert merged.commit == queued[-1].commit
