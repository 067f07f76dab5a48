"""The assignment's default Part 2 configuration and row shape, for tests, benchmarks and notebooks."""

from __future__ import annotations

from typing import Any

__all__ = ["SEED_SCHEMA", "SEED_SERVERS", "SEED_SHARDS", "row", "seed_init", "shard_of"]

SEED_SCHEMA = {"columns": ["Stud_id", "Stud_name", "Stud_marks"],
               "dtypes": ["Number", "String", "Number"]}
SEED_SHARDS = [{"Stud_id_low": 4096 * k, "Shard_id": f"sh{k + 1}", "Shard_size": 4096}
               for k in range(4)]
SEED_SERVERS = {"Server0": ["sh1", "sh2"], "Server1": ["sh3", "sh4"], "Server3": ["sh1", "sh3"],
                "Server4": ["sh4", "sh2"], "Server5": ["sh1", "sh4"], "Server6": ["sh3", "sh2"]}


def seed_init(**changes: Any) -> dict[str, Any]:
    """The /init body of the assignment: 4 shards, 3 replicas each, 6 servers."""
    body: dict[str, Any] = {"N": 6, "schema": SEED_SCHEMA, "shards": SEED_SHARDS,
                            "servers": SEED_SERVERS}
    body.update(changes)
    return body


def shard_of(stud_id: int) -> str:
    """The seed's shard of a Stud_id (4 shards of 4096)."""
    return f"sh{stud_id // 4096 + 1}"


def row(stud_id: int, marks: int = 50) -> dict[str, Any]:
    return {"Stud_id": stud_id, "Stud_name": f"S{stud_id}", "Stud_marks": marks}
