"""What a replica applies from its shard's log, on a real engine: every command sets whole
rows, so applying again from an applied index that lagged (a restart) leaves the same rows,
and a run of puts applied as one write leaves what applying them one by one leaves."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pymongo
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SEED_SCHEMA, row
from dslab.contract.studdb import Schema
from dslab.shard.changes import apply_commands
from dslab.shard.rowcache import RowCache
from dslab.shard.store import ShardStore

IDS = st.integers(0, 5)
MARKS = st.integers(0, 3)
commands = st.one_of(
    st.lists(st.tuples(IDS, MARKS), min_size=1, max_size=3, unique_by=lambda t: t[0]).map(
        lambda rows: json.dumps({"put": [row(i, marks=m) for i, m in rows]})),
    st.tuples(IDS, MARKS).map(lambda t: json.dumps({"replace": row(t[0], marks=t[1])})),
    IDS.map(lambda i: json.dumps({"delete": i})),
    st.lists(IDS, max_size=3).map(lambda ids: json.dumps({"erase": ids})),
)


def model(log: list[str]) -> dict[int, dict[str, Any]]:
    """The rows a log leaves, one command at a time, in memory."""
    rows: dict[int, dict[str, Any]] = {}
    for command in log:
        [(kind, body)] = json.loads(command).items()
        if kind == "put":
            rows.update({r["Stud_id"]: r for r in body})
        elif kind == "replace" and body["Stud_id"] in rows:
            rows[body["Stud_id"]] = body
        elif kind == "delete":
            rows.pop(body, None)
        elif kind == "erase":
            for stud_id in body:
                rows.pop(stud_id, None)
    return rows


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log=st.lists(commands, min_size=1, max_size=12), data=st.data())
def test_applying_again_from_any_earlier_point_leaves_the_same_rows(engine_uri, loop, log, data):
    restart_at = data.draw(st.integers(0, len(log)), label="applied index after a restart")
    batches = data.draw(st.lists(st.integers(1, 4), min_size=len(log), max_size=len(log)),
                        label="batch sizes")

    async def scenario() -> None:
        client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(engine_uri)
        try:
            store = ShardStore(client[f"a{uuid.uuid4().hex}"], RowCache())
            await store.configure(Schema.model_validate(SEED_SCHEMA), ["sh1"])
            done = 0
            for size in batches:  # applied in batches, as the applier takes them
                if done < len(log):
                    await apply_commands(store, "sh1", log[done:done + size])
                    done += size
            expected = sorted(model(log).values(), key=lambda r: r["Stud_id"])
            assert await store.rows("sh1") == expected
            await apply_commands(store, "sh1", log[restart_at:])  # a lagging applied index
            assert await store.rows("sh1") == expected
            direct = ShardStore(store.db)  # the engine's rows, not the cache's
            assert await direct.rows("sh1") == expected
        finally:
            await client.close()

    loop.run_until_complete(scenario())
