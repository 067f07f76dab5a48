"""A change of a shard's rows as a log entry's command, and applying it to the store.

Under ``--replication majority`` a shard server's writes go through its shard's log: the
primary validates a change, encodes it as the entry's command (a JSON string: the log and the
wire carry it as is), and every replica applies the committed command to its rows in log
order. Three changes, as the contract's writes:

    {"insert": [row, ...]}               every row, or none if one's Stud_id is held
    {"update": {"Stud_id": id, "row": row}}
    {"delete": id}
    {"erase": [id, ...]}                 the balancer undoing its insert of a write of several
                                         shards that another shard refused

Applying is deterministic (the same rows before, the same rows after, on every replica) and
may be repeated: a replica restarted between applying an entry and recording that it did
applies it again, to the same end.
"""

from __future__ import annotations

import json
from typing import Any

from ..common.errors import BadRequest
from ..contract.studdb import Schema, validate_row
from .store import ShardStore

__all__ = ["encode_change", "apply_change"]


def encode_change(schema: Schema | None, change: dict[str, Any]) -> str:
    """The command for ``change``, validated against the schema, or a 400 saying why."""
    if schema is None:
        raise BadRequest("<Error> not configured: POST /config first")
    if len(change) != 1:
        raise BadRequest("<Error> a change is one of insert, update, delete, erase")
    [(kind, body)] = change.items()
    if kind == "insert":
        if not isinstance(body, list):
            raise BadRequest("<Error> insert takes a list of rows")
        rows = [validate_row(schema, row) for row in body]
        ids = [row["Stud_id"] for row in rows]
        if len(set(ids)) != len(ids):
            raise BadRequest("<Error> an insert names each Stud_id once")
        return json.dumps({"insert": rows}, separators=(",", ":"))
    if kind == "update":
        if not isinstance(body, dict) or set(body) != {"Stud_id", "row"}:
            raise BadRequest("<Error> update takes {Stud_id, row}")
        row = validate_row(schema, body["row"])
        if row["Stud_id"] != body["Stud_id"]:
            raise BadRequest("<Error> data.Stud_id must equal Stud_id: an update cannot move a row")
        return json.dumps({"update": {"Stud_id": row["Stud_id"], "row": row}},
                          separators=(",", ":"))
    if kind == "delete":
        if not isinstance(body, int) or isinstance(body, bool):
            raise BadRequest("<Error> delete takes a Stud_id")
        return json.dumps({"delete": body})
    if kind == "erase":
        if not isinstance(body, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in body):
            raise BadRequest("<Error> erase takes a list of Stud_ids")
        return json.dumps({"erase": body})
    raise BadRequest(f"<Error> unknown change {kind!r}: one of insert, update, delete, erase")


async def apply_change(store: ShardStore, shard: str, command: str) -> Any:
    """Apply a committed command: an insert answers the Stud_ids that were held already (and
    then stored nothing: a write is all or nothing), an update or a delete whether the row was
    there. Nothing else writes the shard meanwhile: a replica applies its log in order."""
    [(kind, body)] = json.loads(command).items()
    if kind == "insert":
        held = await store.held(shard, [row["Stud_id"] for row in body])
        return held if held else await store.insert_new(shard, body)
    if kind == "update":
        return await store.update(shard, body["Stud_id"], body["row"])
    if kind == "erase":
        return await store.delete_many(shard, body)
    return await store.delete(shard, body)
