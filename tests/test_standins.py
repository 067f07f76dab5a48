"""The stand-in shard servers (``standins.py``) answer as the real one does: the same calls
sent to both, in the same order, get the same status and the same JSON. A test stepped on the
stand-ins then checks the balancer against the answers it really gets."""

from __future__ import annotations

import asyncio

from conftest import SEED_SCHEMA, ShardServer, row
from dslab.db.fanout import ServerRefused
from standins import SteppedShardServers, SteppedSupervisor

CALLS: list[tuple[str, str, dict]] = [
    ("POST", "/config", {"schema": SEED_SCHEMA, "shards": ["sh1", "sh2"]}),
    ("POST", "/write", {"shard": "sh1", "curr_idx": 0, "data": [row(1), row(3)]}),
    ("POST", "/write", {"shard": "sh1", "curr_idx": 2, "data": [row(3, marks=80)]}),  # a retry
    ("POST", "/insert", {"shard": "sh1", "curr_idx": 2,
                         "data": [row(2), row(3, marks=99), row(1), row(4)]}),
    ("POST", "/insert", {"shard": "sh2", "curr_idx": 0, "data": [row(4100)]}),
    ("POST", "/read", {"shard": "sh1", "Stud_id": {"low": 1, "high": 3}}),
    ("POST", "/read", {"shard": "sh2", "Stud_id": {"low": 0, "high": 1 << 40}}),
    ("PUT", "/update", {"shard": "sh1", "Stud_id": 2, "data": row(2, marks=70)}),
    ("PUT", "/update", {"shard": "sh1", "Stud_id": 9, "data": row(9)}),
    ("DELETE", "/del", {"shard": "sh1", "Stud_id": 4}),
    ("DELETE", "/del", {"shard": "sh1", "Stud_id": 4}),
    ("POST", "/erase", {"shard": "sh1", "Stud_ids": [1, 7]}),
    ("GET", "/copy", {"shards": ["sh1", "sh2"]}),
]


def stand_in_answers() -> list[tuple[int, dict]]:
    async def run() -> list[tuple[int, dict]]:
        supervisor = SteppedSupervisor()
        await supervisor.spawn("Server0")
        servers = SteppedShardServers(supervisor)
        answers = []
        for method, path, body in CALLS:
            try:
                answers.append((200, await servers.call("Server0", method, path, body)))
            except ServerRefused as refused:
                answers.append((refused.status, {"message": refused.message,
                                                 "status": "failure"}))
        return answers

    return asyncio.run(run())


def test_the_stand_in_shard_server_answers_as_the_real_one(tmp_path):
    with ShardServer(tmp_path) as client:  # named Server0, as the stand-in's is
        real = [(r.status_code, r.json()) for r in
                (client.request(method, path, json=body) for method, path, body in CALLS)]
    assert [status for status, _ in real] == [200] * 8 + [404, 200, 404, 200, 200]
    for call, got, want in zip(CALLS, stand_in_answers(), real, strict=True):
        assert got == want, call
