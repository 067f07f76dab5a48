"""The data path: POST /read, POST /write, PUT /update, DELETE /del.

Reads ask one live replica of each shard they touch. With ``linearizable`` reads (the
default) a read of a shard holds the shard's lock shared, so it never overlaps a change being
applied or undone: no read returns a value older than one acknowledged or read before it
began, nor a change that is then undone. With ``any``, reads skip the lock: fastest, and a
read may see a change on one replica that the next read, on another, does not.

Writes, updates and deletes of a shard run under that shard's lock (``ShardLocks``) and go
to every server on the shard's ring; a server that fails one is *evicted* at once: it leaves
every ring before the write is acknowledged, so replicas that answer never disagree. Acknowledged means every live replica
holds the row (journaled) and the shard's new row count and in-sync servers are saved.

Liveness is the transport's and the heartbeats' call, never a request's: a replica that
refuses a write that the others applied is out of step and evicted; a write that every
replica refuses is the request's fault, and nobody is evicted (``fanout``). A write that
cannot be completed or recorded is undone where it was applied: all or nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..common.errors import ApiError, BadRequest, Conflict, NotFound, Unavailable
from ..common.limits import MAX_BODY, MAX_ROWS
from ..contract.studdb import validate_row
from ..keeper.upstream import UpstreamError
from .fanout import classify
from .groupcommit import GroupCommitter, Waiting, commit_in_rounds
from .locks import ShardLocks
from .metadata import Metadata
from .metrics import DbMetrics
from .servers import ShardServers
from .state import ClusterState

__all__ = ["READ_CONSISTENCIES", "DataPath", "clean_rows", "clash_error"]

READ_CONSISTENCIES = ("linearizable", "any")

log = logging.getLogger(__name__)

_UNREACHABLE = (UpstreamError, OSError)


class DataPath:
    def __init__(self, state: ClusterState, metadata: Metadata, servers: ShardServers,
                 locks: ShardLocks, evict: Callable[[str, str], None],
                 metrics: DbMetrics | None = None,
                 read_consistency: str = "linearizable") -> None:
        if read_consistency not in READ_CONSISTENCIES:
            raise ValueError(f"read consistency {read_consistency!r}: one of {READ_CONSISTENCIES}")
        self.linearizable_reads = read_consistency == "linearizable"
        self.state = state
        self.metadata = metadata
        self.servers = servers
        self.locks = locks
        self.evict = evict  # the keeper's: out of every ring now, replaced on its next round
        self.metrics = metrics
        self.committer = GroupCommitter(locks, self._commit_batch, max_rows=MAX_ROWS,
                                        max_bytes=MAX_BODY // 2)

    async def read(self, low: int, high: int) -> tuple[list[str], list[dict[str, Any]]]:
        self.state.require_config()
        shards = self.state.shardmap.shards_for_range(low, high)
        # Each shard is asked only for its own part, so the bounds the engine compares are
        # within 64 bits (shards are) whatever the client's.
        parts = await asyncio.gather(*(self._read_shard(
            s.shard_id, max(low, s.low), min(high, s.high - 1)) for s in shards))
        rows = [row for part in parts for row in part]  # shards are in Stud_id order
        return [s.shard_id for s in shards], rows

    async def _read_shard(self, shard: str, low: int, high: int) -> list[dict[str, Any]]:
        if not self.linearizable_reads:
            return await self._ask_shard(shard, low, high)
        async with self.locks.share(shard):
            return await self._ask_shard(shard, low, high)

    async def _ask_shard(self, shard: str, low: int, high: int) -> list[dict[str, Any]]:
        answer = await self.servers.ask_one(shard, self.state.rings[shard], "POST", "/read",
                                            {"shard": shard, "Stud_id": {"low": low, "high": high}})
        return list(answer["data"])

    async def write(self, data: list[Any]) -> int:
        groups = clean_rows(self.state, data)
        if len(groups) == 1:  # one shard: group commit
            [(shard, rows)] = groups.items()
            return await self.committer.write(shard, rows)
        return await self._write_shards(groups)

    async def _commit_batch(self, shard: str, batch: list[Waiting]) -> None:
        """One batch of single-shard writes, under the shard's lock: one bulk insert per
        replica, one saved row count. A write whose ids are stored (the replicas' _id index
        says so) gets its own 409 while the others commit. A write that shares an id with an
        earlier write of the batch waits for it, in a next round: refused if it committed
        (known here, no round trip), tried if it was refused."""
        self.state.live(shard)
        await commit_in_rounds(batch, functools.partial(self._commit_round, shard), clash_error)

    async def _commit_round(self, shard: str, writes: list[Waiting]) -> set[int]:
        """Writes with no id in common, as one bulk insert; the ids found or left stored."""
        try:
            return await self._apply(shard, writes)
        except ApiError as exc:
            if exc.status >= 500 or len(writes) == 1:
                raise
            # Every replica refused the batch for what it carries: one write at a time, so
            # that only the write at fault is refused.
            known: set[int] = set()
            for waiting in writes:
                try:
                    known |= await self._apply(shard, [waiting])
                except ApiError as one:
                    waiting.fail(one)
            return known

    async def _apply(self, shard: str, writes: list[Waiting]) -> set[int]:
        """Insert the writes' rows on every live replica; writes that hit stored rows are
        refused (409) and what they inserted is erased again; the rest is acknowledged.
        Returns the ids stored now that the writes touched: found stored, or committed."""
        rows = [row for waiting in writes for row in waiting.rows]
        applied, stored = await self._insert(shard, rows)
        clashing = {w: sorted(set(w.ids) & stored) for w in writes if not stored.isdisjoint(w.ids)}
        if clashing:
            inserted = [i for w in clashing for i in w.ids if i not in stored]
            await self._erase_on(shard, applied, inserted)
            for waiting, clash in clashing.items():
                waiting.fail(clash_error(clash))
        committed = [w for w in writes if w not in clashing]
        if not committed:
            return stored
        try:
            await self._acknowledge({shard: (applied, sum(len(w.rows) for w in committed))})
        except ApiError:  # not recorded, so not acknowledged: undone
            await self._erase_on(shard, applied, [i for w in committed for i in w.ids])
            raise
        committed_ids = [i for w in committed for i in w.ids]
        self._acknowledged(shard, committed_ids)
        if self.metrics is not None:
            self.metrics.acknowledged(shard, len(committed), sum(len(w.rows) for w in committed),
                                      batch=True)
        for waiting in committed:
            waiting.succeed(len(waiting.rows))
        return stored | set(committed_ids)

    async def _insert(self, shard: str, rows: list[dict[str, Any]]) -> tuple[list[str], set[int]]:
        """Insert ``rows`` on every live replica of ``shard``, the ones already stored left
        alone: (the replicas that hold them now, the Stud_ids that were stored). The replicas'
        _id index answers "is it new?": no round trip asks first. A replica that names
        other stored rows than the others is out of step and leaves."""
        sent_to = self.state.live(shard)
        try:
            answers = await self._fan_out_answers(shard, "POST", "/insert", {
                "shard": shard, "curr_idx": self.state.valid_idx[shard], "data": rows},
                names=sent_to)
        except BaseException:
            self._doubt(shard, rows)
            raise
        if len(answers) < len(sent_to):  # some replica did not answer: it may hold them
            self._doubt(shard, rows)
        existing = {name: set(answer["existing"]) for name, answer in answers.items()}
        stored = set().union(*existing.values())
        for name, held in list(existing.items()):  # in-sync replicas hold the same rows
            if held != stored:
                self.evict(name, f"out of step: held {len(held)} of {len(stored)} clashing rows")
                del existing[name]
        if not existing:
            raise Unavailable(f"<Error> Every replica of {shard} failed: nothing written")
        return list(existing), stored

    def _doubt(self, shard: str, rows: list[dict[str, Any]]) -> None:
        """Rows sent to a replica that did not answer may be there when it is started again
        in place: until a write of theirs is acknowledged, the revival erases them."""
        self.state.in_doubt.setdefault(shard, set()).update(r["Stud_id"] for r in rows)

    async def _erase_on(self, shard: str, names: list[str], stud_ids: list[int]) -> None:
        """Erase what a batch inserted on ``names``; a replica that cannot is out of step."""
        if not stud_ids:
            return
        incarnations = self._incarnations(names)
        results = await asyncio.gather(*(self.servers.call(n, "POST", "/erase", {
            "shard": shard, "Stud_ids": stud_ids}) for n in names), return_exceptions=True)
        for name, result in zip(names, results):
            if isinstance(result, BaseException):
                self._evict_if_same(name, incarnations, f"could not undo a write: {result}")

    def _incarnations(self, names: list[str]) -> dict[str, object]:
        """Which run of each server a call goes to (its connection pool, one per start)."""
        return {name: self.servers.pool_of(name) for name in names}

    def _evict_if_same(self, name: str, incarnations: dict[str, object], why: str) -> None:
        """Evict ``name`` for a failed call, unless it was started again meanwhile (a restart
        in place closes the old run's connections: the new run did not fail)."""
        if self.servers.pool_of(name) is incarnations[name]:
            self.evict(name, why)
        else:
            log.info("%s failed on a run of %s that was since replaced: %s", name, name, why)

    async def _write_shards(self, groups: dict[str, list[dict[str, Any]]]) -> int:
        """A write of several shards, all or nothing: it holds every shard's lock, inserts in
        every shard at once, and if any shard failed or held one of the ids, erases what it
        inserted everywhere."""
        async with self.locks.hold(groups):
            for shard in groups:
                self.state.live(shard)
            outcomes = await asyncio.gather(*(self._insert(s, rows) for s, rows in groups.items()),
                                            return_exceptions=True)
            done: dict[str, tuple[list[str], set[int]]] = {}
            failed: list[BaseException] = []
            for shard, outcome in zip(groups, outcomes):
                if isinstance(outcome, BaseException):
                    failed.append(outcome)
                else:
                    done[shard] = outcome
            clash = sorted(i for _, stored in done.values() for i in stored)
            if failed or clash:  # undo where it was inserted (in_sync stays: no ack)
                await asyncio.gather(*(self._erase_on(s, names, [
                    r["Stud_id"] for r in groups[s] if r["Stud_id"] not in stored])
                    for s, (names, stored) in done.items()))
                raise failed[0] if failed else clash_error(clash)
            try:
                await self._acknowledge({s: (names, len(groups[s]))
                                         for s, (names, _) in done.items()})
            except ApiError:  # not recorded, so not acknowledged: undone
                await asyncio.gather(*(self._erase_on(s, names, [r["Stud_id"] for r in groups[s]])
                                       for s, (names, _) in done.items()))
                raise
            for s, rows in groups.items():
                self._acknowledged(s, [r["Stud_id"] for r in rows])
                if self.metrics is not None:
                    self.metrics.acknowledged(s, 1, len(rows), batch=False)
        return sum(len(rows) for rows in groups.values())

    async def _acknowledge(self, changes: dict[str, tuple[list[str], int]]) -> None:
        """Before a write is acknowledged: for each shard it changed, the new row count and
        the servers that applied it, as the shard's in-sync set (if that changed), journaled in
        the metadata in one batch. Memory follows only once it is saved."""
        state = self.state
        states: dict[str, tuple[int | None, list[str] | None]] = {}
        for shard, (applied, added) in changes.items():
            members = set(applied)
            states[shard] = (state.valid_idx[shard] + added if added else None,
                             list(members) if members != state.in_sync[shard] else None)
        await self.metadata.set_shard_states(states)
        for shard, (applied, added) in changes.items():
            state.valid_idx[shard] += added
            state.in_sync[shard] = set(applied)

    def _acknowledged(self, shard: str, stud_ids: list[int]) -> None:
        doubt = self.state.in_doubt.get(shard)
        if doubt:
            doubt.difference_update(stud_ids)

    async def _fan_out(self, shard: str, method: str, path: str,
                       payload: dict[str, Any]) -> list[str]:
        """Send to every live replica of ``shard``; returns those that applied it. Those that
        failed where others applied it leave the shard's ring; if none applied it, the refusal
        (or a 503) is raised and nobody is evicted for what the request carried. The caller
        holds the shard's lock."""
        return list(await self._fan_out_answers(shard, method, path, payload))

    async def _fan_out_answers(self, shard: str, method: str, path: str,
                               payload: dict[str, Any], names: list[str] | None = None
                               ) -> dict[str, dict[str, Any]]:
        """``_fan_out``, with each applying replica's answer. ``names``: the shard's live
        replicas, when the caller has them already."""
        names = names if names is not None else self.state.live(shard)
        incarnations = self._incarnations(names)
        results = await asyncio.gather(*(self.servers.call(n, method, path, payload)
                                         for n in names), return_exceptions=True)
        outcome = classify(names, results, _UNREACHABLE)
        for name, why in outcome.to_evict():
            self._evict_if_same(name, incarnations, f"{method} {path}: {why}")
        refusal = outcome.refusal()
        if refusal is not None:
            raise refusal
        if not outcome.applied:
            raise Unavailable(f"<Error> Every replica of {shard} failed: nothing written")
        answers = dict(zip(names, results))
        return {name: answers[name] for name in outcome.applied}  # type: ignore[misc]

    async def update(self, stud_id: int, data: Any) -> None:
        row = validate_row(self.state.require_config(), data)
        if row["Stud_id"] != stud_id:
            raise BadRequest("<Error> data.Stud_id must equal Stud_id: an update cannot move a row")
        shard = self.state.shard_of(stud_id)
        async with self.locks.hold([shard]):
            old = await self._current_row(shard, stud_id)
            applied = await self._fan_out(shard, "PUT", "/update",
                                          {"shard": shard, "Stud_id": stud_id, "data": row})
            await self._acknowledge_or_restore(shard, applied, 0, old)

    async def delete(self, stud_id: int) -> None:
        self.state.require_config()
        shard = self.state.shard_of(stud_id)
        async with self.locks.hold([shard]):
            old = await self._current_row(shard, stud_id)
            applied = await self._fan_out(shard, "DELETE", "/del",
                                          {"shard": shard, "Stud_id": stud_id})
            await self._acknowledge_or_restore(shard, applied, -1, old)

    async def _current_row(self, shard: str, stud_id: int) -> dict[str, Any]:
        """The row as it is now (kept to put back if the change cannot be recorded), or 404."""
        rows = await self._read_shard(shard, stud_id, stud_id)
        if not rows:
            raise NotFound(f"<Error> No data entry with Stud_id:{stud_id}")
        return rows[0]

    async def _acknowledge_or_restore(self, shard: str, applied: list[str], added: int,
                                      old: dict[str, Any]) -> None:
        try:
            await self._acknowledge({shard: (applied, added)})
        except ApiError:  # not recorded, so not acknowledged: the row as it was
            with contextlib.suppress(ApiError):
                await self._fan_out(shard, "POST", "/write", {
                    "shard": shard, "curr_idx": self.state.valid_idx[shard], "data": [old]})
            raise


def clean_rows(state: ClusterState, data: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """A write's rows, validated, grouped by shard; a 400 for ids given twice or outside
    every shard."""
    schema = state.require_config()
    rows = [validate_row(schema, row) for row in data]
    dups = sorted(i for i, n in Counter(r["Stud_id"] for r in rows).items() if n > 1)
    if dups:
        raise BadRequest(f"<Error> Stud_id(s) given twice: {_ids(dups)}")
    groups, homeless = state.shardmap.group(rows)
    if homeless:
        raise BadRequest(f"<Error> Stud_id(s) outside every shard: {_ids(homeless)}")
    return {shard: [dict(r) for r in group] for shard, group in groups.items()}


def clash_error(ids: Sequence[int]) -> Conflict:
    return Conflict(f"<Error> Stud_id(s) already exist: {_ids(ids)}; nothing written")


def _ids(ids: Sequence[int], most: int = 10) -> str:
    shown = ", ".join(map(str, ids[:most]))
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")
