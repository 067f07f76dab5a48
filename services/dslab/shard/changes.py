"""A shard's changes under ``--replication majority``: decided at the primary, logged as
commands that set whole rows, applied in log order on every replica.

As MongoDB writes its oplog, an entry says what the rows *became*, never what to try:

    {"put": [row, ...]}          these rows, whole (stored or replaced)
    {"replace": row}             this row, whole, if it is there
    {"delete": id}               no row of this Stud_id
    {"erase": [id, ...]}         no rows of these Stud_ids (the balancer undoing its insert of
                                 a write of several shards that another shard refused)

So applying an entry twice, or applying again from an applied index that lagged behind the
rows (a restart), leaves the same rows: the last entry on each Stud_id decides. The outcome
of a change that depends on the rows (an insert whose Stud_id is held is refused, all of it;
an update or a delete of a missing row is a 404) is decided by the primary *before* it logs
anything, against rows that hold every entry of an earlier term (the primary's no-op is
applied) and every entry it logged that touches the same Stud_ids (it waits for those to be
applied first; entries touching other rows cannot change the outcome). A change refused
there is never logged.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

from ..common.errors import BadRequest
from ..contract.studdb import Schema, validate_row
from .store import ShardStore

__all__ = ["Change", "ShardChanges", "parse_change", "apply_commands", "Log"]


class Log(Protocol):
    """What the changes need of the shard's replica (``replicas.ReplicaHost``)."""

    applied: int  # the last entry the shard's rows hold

    async def decidable(self, timeout: float) -> int: ...
    async def until_applied(self, index: int, timeout: float) -> None: ...
    async def append(self, command: str) -> tuple[int, asyncio.Future[None]]: ...
    async def committed(self, index: int, waiter: asyncio.Future[None],
                        timeout: float) -> None: ...


class Change:
    """A client's change, validated: ``kind``, the Stud_ids it touches, its body."""

    def __init__(self, kind: str, ids: list[int], body: Any) -> None:
        self.kind = kind
        self.ids = ids
        self.body = body


def parse_change(schema: Schema | None, change: dict[str, Any]) -> Change:
    """``{"insert": rows}``, ``{"update": {"Stud_id", "row"}}``, ``{"delete": id}`` or
    ``{"erase": ids}``, validated against the schema; or a 400 saying why."""
    if schema is None:
        raise BadRequest("<Error> not configured: POST /config first")
    if len(change) != 1:
        raise BadRequest("<Error> a change is one of insert, update, delete, erase")
    [(kind, body)] = change.items()
    if kind == "insert":
        if not isinstance(body, list) or not body:
            raise BadRequest("<Error> insert takes a list of rows")
        rows = [validate_row(schema, row) for row in body]
        ids = [row["Stud_id"] for row in rows]
        if len(set(ids)) != len(ids):
            raise BadRequest("<Error> an insert names each Stud_id once")
        return Change(kind, ids, rows)
    if kind == "update":
        if not isinstance(body, dict) or set(body) != {"Stud_id", "row"}:
            raise BadRequest("<Error> update takes {Stud_id, row}")
        row = validate_row(schema, body["row"])
        if row["Stud_id"] != body["Stud_id"]:
            raise BadRequest("<Error> data.Stud_id must equal Stud_id: an update cannot move a row")
        return Change(kind, [row["Stud_id"]], row)
    if kind in ("delete", "erase"):
        ids = [body] if kind == "delete" else body
        if not isinstance(ids, list) or not all(_is_id(i) for i in ids):
            raise BadRequest(f"<Error> {kind} takes {'a Stud_id' if kind == 'delete' else 'Stud_ids'}")
        return Change(kind, list(ids), body)
    raise BadRequest(f"<Error> unknown change {kind!r}: one of insert, update, delete, erase")


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ShardChanges:
    """One shard's changes at its primary: decided one at a time, logged, answered once
    committed. ``timeout``: how long a change waits for a majority (then a 503, outcome
    unknown, from the log).

    A committed change may not be applied yet when it is answered, so each Stud_id keeps the
    last entry that touched it until the rows hold that entry: a later change of the same
    Stud_id is decided only then."""

    def __init__(self, store: ShardStore, shard: str, log: Log, timeout: float) -> None:
        self.store = store
        self.shard = shard
        self.log = log
        self.timeout = timeout
        self._deciding = asyncio.Lock()
        self._pending: dict[int, int] = {}  # Stud_id -> the last logged entry touching it
        self._prune_at = _PRUNE_FROM  # forget applied entries when _pending grows past this
        self._term = 0  # the primary's term the entries in _pending were logged in

    async def make(self, change: Change) -> Any:
        """The change's result once it is committed: an insert answers the Stud_ids it found
        held (and then logged nothing), an update or a delete whether the row was there.
        Raises the log's NotPrimary or NotCommitted."""
        async with self._deciding:
            term = await self.log.decidable(self.timeout)
            if term != self._term:  # primary again, or anew: entries of an earlier term it
                # logged may have been replaced, and the no-op applied covers those that stayed
                self._pending.clear()
                self._term = term
            touching = [self._pending[i] for i in change.ids if i in self._pending]
            if touching:
                await self.log.until_applied(max(touching), self.timeout)
            command, result = await self._decide(change)
            if command is None:
                return result
            index, waiter = await self.log.append(command)
            for stud_id in change.ids:
                self._pending[stud_id] = index
            self._prune()
        await self.log.committed(index, waiter, self.timeout)
        return result

    async def _decide(self, change: Change) -> tuple[str | None, Any]:
        held = await self.store.held(self.shard, change.ids)
        if change.kind == "insert":
            return (None, held) if held else (_command("put", change.body), [])
        if change.kind == "update":
            return (_command("replace", change.body), True) if held else (None, False)
        if change.kind == "delete":
            return (_command("delete", change.body), True) if held else (None, False)
        return _command("erase", change.body), None

    def _prune(self) -> None:
        """Forget the entries the rows hold, once ``_pending`` doubled since the last time
        (amortized: a change costs O(1) of it)."""
        if len(self._pending) < self._prune_at:
            return
        applied = self.log.applied
        self._pending = {i: index for i, index in self._pending.items() if index > applied}
        self._prune_at = max(_PRUNE_FROM, 2 * len(self._pending))


_PRUNE_FROM = 1024


def _command(kind: str, body: Any) -> str:
    return json.dumps({kind: body}, separators=(",", ":"))


async def apply_commands(store: ShardStore, shard: str, commands: list[str]) -> None:
    """Apply committed commands in order; a run of puts as one write (the last row of a
    Stud_id in the run wins, as applying them one by one would leave it)."""
    puts: dict[int, dict[str, Any]] = {}
    for command in commands:
        [(kind, body)] = json.loads(command).items()
        if kind == "put":
            for row in body:
                puts.pop(row["Stud_id"], None)
                puts[row["Stud_id"]] = row
            continue
        if puts:
            await store.write(shard, list(puts.values()))
            puts = {}
        if kind == "replace":
            await store.update(shard, body["Stud_id"], body)
        elif kind == "delete":
            await store.delete(shard, body)
        elif kind == "erase":
            await store.delete_many(shard, body)
        else:
            raise ValueError(f"not a command: {command[:80]}")
    if puts:
        await store.write(shard, list(puts.values()))
