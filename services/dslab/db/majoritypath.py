"""The data path under ``--replication majority``: each shard's changes go to its primary,
which logs them, and answers once a majority of the shard's servers journaled them.

* A write of one shard is one ``insert`` entry at the shard's primary: every row or none (a
  row whose Stud_id is held makes it a 409, on every replica alike). Concurrent writes are
  batched by the primary's journal (group commit there), so the balancer holds no lock.
* A write of several shards holds their locks, inserts in each, and if one shard refused or
  failed, erases what the others inserted (an ``erase`` entry): all or nothing, as under
  ``all``. Linearizable reads hold a shard's lock shared, so none sees such a write half done.
* An update or a delete is one entry; the primary's answer says whether the row was there.
* A linearizable read asks the primary (``/repl/read``), which answers once its rows hold
  every change committed before the read arrived. An ``any`` read asks any of the shard's
  servers, which answers with the rows it has applied: it may be behind the primary (a
  secondary catching up, a server just joined), and a read may go back in time.

Nothing here evicts anyone: a slow or lost secondary costs nothing while a majority answers,
and the heartbeats, not a request, decide who is dead. A primary that refuses as not primary,
or cannot be reached, is marked lost and the next use elects another; a change whose outcome
is unknown (sent, no answer) is a 503 that says so, never retried (it may have committed).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..common.errors import ApiError, BadRequest, NotFound, Unavailable
from ..contract.studdb import validate_row
from ..keeper.upstream import UpstreamConnectError, UpstreamError
from .datapath import clash_error, clean_rows
from .fanout import ServerRefused
from .locks import ShardLocks
from .metrics import DbMetrics
from .primaries import Primaries
from .servers import ShardServers
from .state import ClusterState

__all__ = ["MajorityDataPath"]

log = logging.getLogger(__name__)

_TRIES = 3  # a primary found not to be one (or not reachable) is elected again, this often
_POLL = 0.05  # seconds between looks at a joining server's progress


class MajorityDataPath:
    def __init__(self, state: ClusterState, servers: ShardServers, locks: ShardLocks,
                 primaries: Primaries, metrics: DbMetrics | None = None,
                 read_consistency: str = "linearizable") -> None:
        self.linearizable_reads = read_consistency == "linearizable"
        self.state = state
        self.servers = servers
        self.locks = locks
        self.primaries = primaries
        self.metrics = metrics

    # ---- reads ---------------------------------------------------------------------------
    async def read(self, low: int, high: int) -> tuple[list[str], list[dict[str, Any]]]:
        self.state.require_config()
        shards = self.state.shardmap.shards_for_range(low, high)
        parts = await asyncio.gather(*(self._read_shard(
            s.shard_id, max(low, s.low), min(high, s.high - 1)) for s in shards))
        return [s.shard_id for s in shards], [row for part in parts for row in part]

    async def _read_shard(self, shard: str, low: int, high: int) -> list[dict[str, Any]]:
        if not self.linearizable_reads:  # any replica, as it is: it may be behind
            answer = await self.servers.ask_one(shard, self.state.rings[shard], "POST", "/read", {
                "shard": shard, "Stud_id": {"low": low, "high": high}})
            return list(answer["data"])
        async with self.locks.share(shard):
            answer = await self._at_primary(shard, "/repl/read", {
                "shard": shard, "Stud_id": {"low": low, "high": high}}, idempotent=True)
        return list(answer["data"])

    # ---- changes -------------------------------------------------------------------------
    async def write(self, data: list[Any]) -> int:
        groups = clean_rows(self.state, data)
        if len(groups) == 1:
            [(shard, rows)] = groups.items()
            held = await self._insert(shard, rows)
            if held:
                raise clash_error(held)
            return len(rows)
        return await self._write_shards(groups)

    async def _insert(self, shard: str, rows: list[dict[str, Any]]) -> list[int]:
        """The Stud_ids that were held (then nothing was stored), or none: all stored."""
        held: list[int] = await self._propose(shard, {"insert": rows})
        if not held:
            self.state.valid_idx[shard] += len(rows)
            if self.metrics is not None:
                self.metrics.acknowledged(shard, 1, len(rows), batch=False)
        return held

    async def _write_shards(self, groups: dict[str, list[dict[str, Any]]]) -> int:
        async with self.locks.hold(groups):
            outcomes = await asyncio.gather(*(self._insert(s, rows) for s, rows in groups.items()),
                                            return_exceptions=True)
            inserted = [s for s, o in zip(groups, outcomes) if o == []]
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            held = sorted(i for o in outcomes if isinstance(o, list) for i in o)
            if failed or held:
                await asyncio.gather(*(self._erase(s, [r["Stud_id"] for r in groups[s]])
                                       for s in inserted))
                if failed:
                    raise failed[0]
                raise clash_error(held)
        return sum(len(rows) for rows in groups.values())

    async def _erase(self, shard: str, stud_ids: list[int]) -> None:
        try:
            await self._propose(shard, {"erase": stud_ids})
        except ApiError as exc:  # the write stays half done: say so loudly
            log.error("could not undo a write of %d rows in %s: %s", len(stud_ids), shard, exc)
            raise
        self.state.valid_idx[shard] -= len(stud_ids)

    async def update(self, stud_id: int, data: Any) -> None:
        row = validate_row(self.state.require_config(), data)
        if row["Stud_id"] != stud_id:
            raise BadRequest("<Error> data.Stud_id must equal Stud_id: an update cannot move a row")
        shard = self.state.shard_of(stud_id)
        if not await self._propose(shard, {"update": {"Stud_id": stud_id, "row": row}}):
            raise NotFound(f"<Error> No data entry with Stud_id:{stud_id}")

    async def delete(self, stud_id: int) -> None:
        self.state.require_config()
        shard = self.state.shard_of(stud_id)
        if not await self._propose(shard, {"delete": stud_id}):
            raise NotFound(f"<Error> No data entry with Stud_id:{stud_id}")
        self.state.valid_idx[shard] -= 1

    # ---- a server joining a shard ------------------------------------------------------------
    async def join(self, shard: str, name: str, within: float) -> None:
        """``name`` just joined ``shard``'s live servers: elect over the new set (a term's
        members are fixed) and wait until it applied what was committed before, as a copy
        would have given it (MongoDB's new member syncs before it serves). Past ``within``
        seconds it goes on catching up in the background, and the log says so."""
        primary = await self.primaries.primary(shard)
        target = await self._shard_state(primary, shard)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            try:
                joined = await self._shard_state(name, shard)
                if joined["applied"] >= target["commit"]:
                    log.info("%s caught up with %s from its log (index %d)", name, shard,
                             joined["applied"])
                    return
            except (ApiError, UpstreamError, OSError) as exc:
                log.debug("%s's state: %s", name, exc)
            if loop.time() > deadline:
                log.warning("%s not caught up with %s within %g s; it goes on from the log",
                            name, shard, within)
                return
            await asyncio.sleep(_POLL)

    async def _shard_state(self, name: str, shard: str) -> dict[str, Any]:
        answer = await self.servers.call(name, "GET", "/repl/state", {})
        [state] = [s for s in answer["replicas"] if s["shard"] == shard]
        return dict(state)

    # ---- the primary ---------------------------------------------------------------------
    async def _propose(self, shard: str, change: dict[str, Any]) -> Any:
        answer = await self._at_primary(shard, "/repl/propose",
                                        {"shard": shard, "change": change}, idempotent=False)
        return answer["result"]

    async def _at_primary(self, shard: str, path: str, payload: dict[str, Any], *,
                          idempotent: bool) -> dict[str, Any]:
        """Ask the shard's primary; one that says it is not, or is not reachable, is marked
        lost and another elected. A change sent without an answer is not sent again."""
        for _ in range(_TRIES):
            primary = await self.primaries.primary(shard)
            try:
                return await self.servers.call(primary, "POST", path, payload)
            except ServerRefused as exc:
                if exc.status == 409:  # not the primary (any more): nothing was logged
                    self.primaries.lost(shard, primary)
                    continue
                if exc.status >= 500:
                    self.primaries.lost(shard, primary)
                    raise Unavailable(_unknown(shard, primary, exc, idempotent)) from None
                raise ApiError(exc.message, exc.status) from None
            except UpstreamConnectError:  # never sent
                self.primaries.lost(shard, primary)
                continue
            except (UpstreamError, OSError) as exc:
                self.primaries.lost(shard, primary)
                if idempotent:
                    continue
                raise Unavailable(_unknown(shard, primary, exc, idempotent)) from None
        raise Unavailable(f"<Error> No primary of {shard} answered after {_TRIES} elections")


def _unknown(shard: str, primary: str, exc: BaseException, idempotent: bool) -> str:
    if idempotent:
        return f"<Error> {primary}, primary of {shard}, failed: {exc}"
    return (f"<Error> {primary}, primary of {shard}, failed before answering ({exc}): the "
            f"change may or may not have been made")
