"""A shard's replication record in a real engine (``dslab.shard.journal``), checked against
``replication.durable.Durable``, the in-memory record the core's own tests trust.

Each test reads the record back through a new ``Journal`` (as a restarted server does), counts
the engine write commands a persist sends, and cuts a persist short between two of its writes
(as a crash would) to check that what is left is a record a replica can safely restart from.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import AutoReconnect
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from conftest import free_port
from dslab.common.errors import Unavailable
from dslab.replication import Durable, Entry, HardState, Ready, Replica, Snapshot
from dslab.shard.journal import Journal

WRITES = frozenset({"insert", "update", "delete", "drop"})


class WriteCounter(CommandListener):
    """The write commands sent to the engine (each is one commit or none, never more)."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name in WRITES:
            self.commands.append(event.command_name)

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass

    def take(self) -> list[str]:
        taken, self.commands = self.commands, []
        return taken


@contextlib.asynccontextmanager
async def fresh_db(uri: str) -> AsyncIterator[tuple[Any, WriteCounter]]:
    """A database of its own on the module's engine, and a counter of its writes."""
    counter = WriteCounter()
    client: AsyncMongoClient[Any] = AsyncMongoClient(uri, event_listeners=[counter])
    name = f"journal_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name], counter
    finally:
        await client.drop_database(name)
        await client.close()


def on_engine(uri: str, body: Callable[[Any, WriteCounter], Awaitable[None]]) -> None:
    async def run() -> None:
        async with fresh_db(uri) as (db, counter):
            await body(db, counter)
    asyncio.run(run())


def entries(term: int, first: int, *commands: str | None) -> tuple[Entry, ...]:
    return tuple(Entry(term, first + i, c) for i, c in enumerate(commands))


def oracle(readies: list[Ready]) -> Durable:
    durable = Durable()
    for ready in readies:
        durable.persist(ready)
    return durable


# Every kind of Ready a replica makes, in an order one could make them in.
HISTORY = [
    # promised term 1, appointed: its no-op and two writes
    Ready(hard_state=HardState(1, 0), append=entries(1, 1, None, "a", "b")),
    Ready(hard_state=HardState(1, 2)),
    Ready(append=entries(1, 4, "c", "d")),  # never committed
    # a primary of term 2 replaces 4 and 5, and commits through 3
    Ready(hard_state=HardState(2, 3), truncate_from=4, append=entries(2, 4, None, "e", "f")),
    Ready(hard_state=HardState(2, 5)),
    Ready(snapshot=Snapshot(3, 1)),  # trimmed through 3
    Ready(append=entries(2, 7, "g")),
    # a copy through 10 of term 3, which the log did not agree with
    Ready(hard_state=HardState(3, 10), snapshot=Snapshot(10, 3, kept_suffix=False)),
    Ready(append=entries(3, 11, None, "h")),
    Ready(hard_state=HardState(3, 12)),
]


def test_a_restarted_journal_loads_what_durable_holds_after_every_kind_of_ready(engine_uri):
    async def body(db, counter):
        journal = Journal(db, "sh1")
        assert await Journal(db, "sh1").load() == (Durable(), 0)
        for done, ready in enumerate(HISTORY, start=1):
            await journal.persist(ready)
            expected = oracle(HISTORY[:done])
            await journal.set_applied(expected.commit)  # the caller applies what committed
            assert await Journal(db, "sh1").load() == (expected, expected.commit), done
        # the trimmed prefix and the entries the copy dropped are gone from the engine too
        stored = await db["_repl_log_sh1"].find({}).sort("_id").to_list()
        assert [d["_id"] for d in stored] == [11, 12]
        assert (await Journal(db, "sh1").load())[0].log().last_index == 12
    on_engine(engine_uri, body)


@pytest.mark.parametrize("ready, writes", [
    (Ready(), []),
    (Ready(messages=()), []),
    (Ready(hard_state=HardState(1, 3)), ["update"]),
    (Ready(append=entries(1, 6, "x", "y", "z")), ["insert"]),
    (Ready(hard_state=HardState(1, 5), append=entries(1, 6, "x")), ["insert", "update"]),
    (Ready(hard_state=HardState(2, 3), truncate_from=4, append=entries(2, 4, "x")),
     ["delete", "insert", "update"]),
    (Ready(snapshot=Snapshot(2, 1)), ["update", "delete"]),
    (Ready(hard_state=HardState(2, 9), snapshot=Snapshot(9, 2, kept_suffix=False)),
     ["delete", "update"]),
], ids=["empty", "messages-only", "hard-state", "append", "append+commit", "truncate",
        "trim", "copy"])
def test_each_kind_of_ready_costs_one_write_of_each_kind_it_needs(engine_uri, ready, writes):
    base = [Ready(hard_state=HardState(1, 3), append=entries(1, 1, *"abcde"))]

    async def body(db, counter):
        journal = Journal(db, "sh1")
        await journal.persist_all(base)
        counter.take()
        await journal.persist(ready)
        assert counter.take() == writes
        assert (await Journal(db, "sh1").load())[0] == oracle([*base, ready])
    on_engine(engine_uri, body)


def steady(n: int) -> list[Ready]:
    """A secondary's usual Readys: each append brings one entry and the commit of the last."""
    return [Ready(hard_state=HardState(1, i), append=entries(1, i + 1, f"w{i}")) for i in range(n)]


@pytest.mark.parametrize("readies, most", [
    (HISTORY, 4), (steady(16), 2), (HISTORY[:7], 4), (HISTORY[7:], 3)],
    ids=["history", "steady", "before-the-copy", "from-the-copy"])
def test_persist_all_leaves_the_record_one_by_one_does_in_fewer_writes(engine_uri, readies, most):
    async def body(db, counter):
        one_by_one, grouped = Journal(db, "a"), Journal(db, "b")
        for ready in readies:
            await one_by_one.persist(ready)
        singly = counter.take()
        await grouped.persist_all(readies)
        together = counter.take()
        expected = oracle(readies)
        assert (await Journal(db, "a").load())[0] == expected
        assert (await Journal(db, "b").load())[0] == expected
        assert len(together) <= most < len(singly)
        assert together.count("insert") <= 1 and together.count("update") <= 1
        assert together.count("delete") <= 2  # the cut, and the trimmed prefix
    on_engine(engine_uri, body)


def test_a_group_with_two_truncations_cuts_once_from_the_lower(engine_uri):
    """The second truncation cuts the first one's entries: one delete from the first cut, one
    insert of what is left, one state update (no retry of a refused insert)."""
    base = [Ready(hard_state=HardState(1, 3), append=entries(1, 1, *"abcdefgh"))]
    group = [Ready(hard_state=HardState(2, 3), truncate_from=4, append=entries(2, 4, "x", "y")),
             Ready(hard_state=HardState(3, 3), truncate_from=5, append=entries(3, 5, "z"))]

    async def body(db, counter):
        journal = Journal(db, "sh1")
        await journal.persist_all(base)
        counter.take()
        await journal.persist_all(group)
        assert counter.take() == ["delete", "insert", "update"]
        assert (await Journal(db, "sh1").load())[0] == oracle([*base, *group])
    on_engine(engine_uri, body)


def test_applied_round_trips_and_two_shards_records_are_separate(engine_uri):
    async def body(db, counter):
        sh1, sh2 = Journal(db, "sh1"), Journal(db, "sh2")
        await sh1.persist_all(HISTORY[:5])
        await sh2.persist_all(HISTORY[:2])
        await sh1.set_applied(4)
        await sh2.set_applied(1)
        assert await Journal(db, "sh1").load() == (oracle(HISTORY[:5]), 4)
        assert await Journal(db, "sh2").load() == (oracle(HISTORY[:2]), 1)
        await sh2.set_applied(3)  # ahead of its commit (2): a caller's bug, read as the commit
        assert await Journal(db, "sh2").load() == (oracle(HISTORY[:2]), 2)
        await sh1.set_applied(5)
        assert (await Journal(db, "sh1").load())[1] == 5
        await sh2.clear()
        assert await Journal(db, "sh2").load() == (Durable(), 0)
        assert await Journal(db, "sh1").load() == (oracle(HISTORY[:5]), 5)
        # the shards' own collections are not touched, nor the store's _meta
        names = set(await db.list_collection_names())
        assert names <= {"_repl_state", "_repl_log_sh1", "_repl_log_sh2"}
        # a restarted replica starts from it
        durable, applied = await Journal(db, "sh1").load()
        replica = Replica.restore("a", durable, applied)
        assert (replica.term, replica.commit, replica.applied) == (2, 5, 5)
    on_engine(engine_uri, body)


def test_a_command_other_than_none_or_a_str_is_refused_before_any_write(engine_uri):
    async def body(db, counter):
        with pytest.raises(TypeError):
            await Journal(db, "sh1").persist(Ready(hard_state=HardState(1, 0),
                                                   append=(Entry(1, 1, ("a", 1)),)))
        assert counter.take() == []
    on_engine(engine_uri, body)


# ---- a persist cut short between two of its writes, as by a crash ---------------------------
@contextlib.contextmanager
def writes_allowed(monkeypatch: pytest.MonkeyPatch, budget: int):
    """The engine takes ``budget`` more writes, then the connection is lost on every write."""
    left = [budget]

    def cut(patch: pytest.MonkeyPatch, name: str) -> None:
        original = getattr(AsyncCollection, name)

        async def write(self: Any, *args: Any, **kwargs: Any) -> Any:
            if left[0] <= 0:
                raise AutoReconnect("connection lost (a crash, in this test)")
            left[0] -= 1
            return await original(self, *args, **kwargs)
        patch.setattr(AsyncCollection, name, write)

    with monkeypatch.context() as patch:
        for name in ("insert_many", "update_one", "delete_many", "delete_one", "drop"):
            cut(patch, name)
        yield


CRASHES = {
    # a secondary takes a new primary's entries over its uncommitted ones, and commits them
    "truncate": ([Ready(hard_state=HardState(1, 2), append=entries(1, 1, *"abcde"))],
                 [Ready(hard_state=HardState(2, 6), truncate_from=4,
                        append=entries(2, 4, "x", "y", "z"))], 2),
    # a copy replaces a log it did not agree with; entries follow in the same group
    "copy": ([Ready(hard_state=HardState(1, 3), append=entries(1, 1, *"abcde"))],
             [Ready(hard_state=HardState(2, 10), snapshot=Snapshot(10, 2, kept_suffix=False)),
              Ready(append=entries(2, 11, "x", "y")), Ready(hard_state=HardState(2, 12))], 10),
    # the log trimmed, and more entries in the same group
    "trim": ([Ready(hard_state=HardState(1, 4), append=entries(1, 1, *"abcde"))],
             [Ready(snapshot=Snapshot(3, 1)), Ready(hard_state=HardState(1, 6),
                                                    append=entries(1, 6, "f", "g"))], 4),
    # entries, then a trim past the old log's end in the same group
    "append-then-trim": ([Ready(hard_state=HardState(1, 4), append=entries(1, 1, *"abcde"))],
                         [Ready(hard_state=HardState(1, 7), append=entries(1, 6, "f", "g")),
                          Ready(snapshot=Snapshot(6, 1))], 7),
    # a copy, then a trim past it in the same group (the trim's entries are in the group)
    "copy-then-trim": ([Ready(hard_state=HardState(1, 3), append=entries(1, 1, *"abcde"))],
                       [Ready(hard_state=HardState(2, 10), snapshot=Snapshot(10, 2, False)),
                        Ready(hard_state=HardState(2, 13), append=entries(2, 11, *"xyz")),
                        Ready(snapshot=Snapshot(12, 2))], 13),
}


@pytest.mark.parametrize("scenario", sorted(CRASHES))
def test_a_persist_cut_short_leaves_a_safe_record_and_completes_when_run_again(
        engine_uri, monkeypatch, scenario):
    """After every prefix of a persist's writes: a replica restarts from the record; the term
    never went back; every entry the record calls committed is the new record's (an entry
    about to be cut off is never called committed); the log has no gap (Replica.restore
    checks). Run again, the same persist gives the new record (an entry stored already is no
    duplicate-key error)."""
    before, group, applied = CRASHES[scenario]
    old, new = oracle(before), oracle([*before, *group])
    final = {e.index: e for e in new.entries}

    async def body(db, counter):
        journal = Journal(db, "sh1")
        await journal.persist_all(group)
        total = len(counter.take())
        for budget in range(total + 1):
            async with fresh_db(engine_uri) as (cut_db, _):
                journal = Journal(cut_db, "sh1")
                await journal.persist_all(before)
                await journal.set_applied(min(old.commit, 2))
                with writes_allowed(monkeypatch, budget):
                    if budget < total:
                        with pytest.raises(Unavailable):
                            await journal.persist_all(group)
                durable, applied_now = await Journal(cut_db, "sh1").load()
                Replica.restore("a", durable, applied_now)  # raises if inconsistent
                assert durable.term >= old.term, budget
                assert durable.term >= durable.log().last_term, budget  # Raft's invariant
                for entry in durable.entries:
                    if entry.index <= durable.commit:
                        assert final.get(entry.index) == entry or entry.index <= new.snapshot_index, (budget, entry)
                await journal.persist_all(group)  # run again, whole
                await journal.set_applied(applied)
                assert await Journal(cut_db, "sh1").load() == (new, applied), budget
    on_engine(engine_uri, body)


def test_an_engine_that_is_down_is_the_contracts_503():
    async def run() -> None:
        client: AsyncMongoClient[Any] = AsyncMongoClient(
            f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
            serverSelectionTimeoutMS=300, connectTimeoutMS=300)
        journal = Journal(client["down"], "sh1")
        try:
            for call in (lambda: journal.persist(HISTORY[0]), journal.load,
                         lambda: journal.set_applied(1), journal.clear):
                with pytest.raises(Unavailable) as err:
                    await call()
                assert err.value.status == 503
                assert err.value.message.startswith("<Error> ")
                assert "sh1" in err.value.message and "unavailable" in err.value.message
        finally:
            await client.close()
    asyncio.run(run())


# ---- generated histories -----------------------------------------------------------------
def history(data: st.DataObject) -> list[tuple[Ready, int | None]]:
    """Readys a replica could make, each with the applied index its caller then records (None:
    none): terms never go back, the commit index covers only entries held, a truncation is
    above it and is followed by the new primary's entries, a trim is at most the applied
    index, a copy is of committed data ahead of the applied index."""
    term = commit = applied = snap_index = snap_term = 0
    log: list[Entry] = []
    out: list[tuple[Ready, int | None]] = []

    def last() -> tuple[int, int]:
        return (log[-1].index, log[-1].term) if log else (snap_index, snap_term)

    def term_at(index: int) -> int:
        return snap_term if index == snap_index else log[index - snap_index - 1].term

    commands = st.one_of(st.none(), st.text(max_size=4))
    for _ in range(data.draw(st.integers(1, 14))):
        kind = data.draw(st.sampled_from(["append", "append", "truncate", "trim", "copy",
                                          "commit"]))
        new_term = term + data.draw(st.integers(0, 1))
        snapshot: Snapshot | None = None
        truncate: int | None = None
        new: tuple[Entry, ...] = ()
        floor = max(commit, snap_index)
        if kind == "truncate" and last()[0] > floor:
            truncate = data.draw(st.integers(floor + 1, last()[0]))
            new_term = term + 1  # a newer primary's entries
            log = [e for e in log if e.index < truncate]
            kind = "append"
        if kind == "append":
            n = data.draw(st.integers(1, 3))
            new = tuple(Entry(new_term, last()[0] + 1 + i, data.draw(commands)) for i in range(n))
            log.extend(new)
        elif kind == "trim" and applied > snap_index:
            upto = data.draw(st.integers(snap_index + 1, applied))
            snapshot = Snapshot(upto, term_at(upto))
            log = [e for e in log if e.index > upto]
            snap_index, snap_term = upto, snapshot.term
        elif kind == "copy":
            index = data.draw(st.integers(max(applied, snap_index) + 1, last()[0] + 3))
            # a copy at or below the commit index agrees with the log (committed entries are
            # the primary's); above it, the log may conflict there and is dropped
            keep = index <= last()[0] and (index <= commit or data.draw(st.booleans()))
            index_term = term_at(index) if keep else data.draw(
                st.integers(max(snap_term, last()[1] if index > last()[0] else snap_term),
                            max(new_term, last()[1])))
            new_term = max(new_term, index_term)
            snapshot = Snapshot(index, index_term, keep)
            log = [e for e in log if e.index > index] if keep else []
            snap_index, snap_term = index, index_term
            commit = max(commit, index)
        hard: HardState | None = None
        new_commit = data.draw(st.integers(commit, last()[0]))
        if (new_term, new_commit) != (term, commit) or snapshot is not None or data.draw(st.booleans()):
            hard = HardState(new_term, new_commit)
        term, commit = new_term, new_commit
        told: int | None = None
        if kind == "copy":  # the copied rows are through its index
            applied = told = max(applied, snap_index)
        elif data.draw(st.booleans()):
            applied = told = data.draw(st.integers(applied, commit))
        out.append((Ready(hard_state=hard, snapshot=snapshot, truncate_from=truncate,
                          append=new), told))
    return out


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_generated_histories_load_as_durable_holds_them_one_by_one_or_grouped(engine_uri, data):
    steps = history(data)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(steps)), max_size=4)) + [len(steps)]))
    durable, applied = Durable(), 0
    for ready, told in steps:
        durable.persist(ready)
        applied = told if told is not None else applied
    Replica.restore("a", durable, applied)  # the history is one a replica could have

    async def body(db, counter):
        one_by_one, grouped = Journal(db, "a"), Journal(db, "b")
        for ready, told in steps:
            await one_by_one.persist(ready)
            if told is not None:
                await one_by_one.set_applied(told)
        start = 0
        for end in cuts:
            await grouped.persist_all([ready for ready, _ in steps[start:end]])
            told_here = [told for _, told in steps[start:end] if told is not None]
            if told_here:
                await grouped.set_applied(told_here[-1])
            start = end
        assert await Journal(db, "a").load() == (durable, applied)
        assert await Journal(db, "b").load() == (durable, applied)
    on_engine(engine_uri, body)
