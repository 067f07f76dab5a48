"""The Part 2 shard server: PyMongo's async client behind the lean front end (llhttp), Tornado
for /config.

Contract endpoints: POST /config, GET /heartbeat, GET /copy, POST /read, POST /write,
PUT /update, DELETE /del. Two more serve the balancer's write path: POST /insert (store the
rows that are new, name the Stud_ids that were here: group commit's write) and POST /erase
(delete these Stud_ids: undoing a batch that could not be written everywhere).

It takes a MongoDB URI (``--mongo-uri`` / ``MONGO_URI``); without one it starts its own engine
(``dslab.engine.LocalEngine``) in ``<data root>/<server name>``, as a container would have its
own database, and stops it on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import tornado.web
from pymongo import AsyncMongoClient

from ..common.endpoints import json_answer, json_endpoint
from ..common.errors import BadRequest, Conflict, NotFound, Unavailable
from ..common.front import Answer, Front, FrontRequest, Handler, serve
from ..common.limits import MAX_BODY
from ..common.runtime import die_with_parent, install_uvloop
from ..common.web import FrontOnlyHandler, JsonHandler
from ..contract.studdb import (
    ConfigRequest,
    CopyRequest,
    ShardDelRequest,
    ShardIdsRequest,
    ShardReadRequest,
    ShardUpdateRequest,
    ShardWriteRequest,
    validate_row,
)
from ..engine import LocalEngine
from ..replica.server import server_id_from_env
from ..replication import NotPrimary
from ..replication.wire import ProposeRequest, StepRequest, WireError, decode, encode
from .changes import parse_change
from .peers import Replicas
from .replicas import NotCommitted
from .rowcache import RowCache
from .store import ShardStore

__all__ = ["ShardEndpoints", "main", "make_app"]

log = logging.getLogger("dslab.shard")


class ShardEndpoints:
    """The shard server's endpoints but /config, on the lean front end (``common/front.py``)."""

    def __init__(self, store: ShardStore, name: str, replicas: Replicas | None = None) -> None:
        self.store = store
        self.name = name
        self.replicas = replicas or Replicas(name, store, heartbeat_interval=0.1,
                                             request_timeout=2.0, commit_timeout=10.0)
        self._routes: dict[tuple[bytes, str], Handler] = {
            (b"GET", "/heartbeat"): self.heartbeat,
            (b"GET", "/copy"): json_endpoint(CopyRequest, self.copy),
            (b"POST", "/read"): json_endpoint(ShardReadRequest, self.read),
            (b"POST", "/write"): json_endpoint(ShardWriteRequest, self.write),
            (b"POST", "/insert"): json_endpoint(ShardWriteRequest, self.insert),
            (b"PUT", "/update"): json_endpoint(ShardUpdateRequest, self.update),
            (b"DELETE", "/del"): json_endpoint(ShardDelRequest, self.delete),
            (b"POST", "/erase"): json_endpoint(ShardIdsRequest, self.erase),
            (b"POST", "/repl/step"): json_endpoint(StepRequest, self.repl_step),
            (b"POST", "/repl/propose"): json_endpoint(ProposeRequest, self.repl_propose),
            (b"POST", "/repl/read"): json_endpoint(ShardReadRequest, self.repl_read),
            (b"GET", "/repl/state"): self.repl_state,
        }

    def route(self, method: bytes, path: str) -> Handler | None:
        return self._routes.get((method, path))

    def methods(self) -> dict[str, tuple[str, ...]]:
        """Each path the front end serves, with its methods (for a 405's ``Allow``)."""
        out: dict[str, tuple[str, ...]] = {}
        for method, path in self._routes:
            out[path] = (*out.get(path, ()), method.decode())
        return out

    def shard(self, shard: str) -> str:
        if shard not in self.store.shards:
            raise BadRequest(f"<Error> Shard {shard} is not configured on {self.name}")
        return shard

    def row(self, row: Any) -> dict[str, Any]:
        if self.store.schema is None:
            raise BadRequest(f"<Error> {self.name} is not configured: POST /config first")
        return validate_row(self.store.schema, row)

    async def heartbeat(self, request: FrontRequest) -> Answer:
        return Answer(200, b"", None)  # a body sent anyway was read and dropped

    async def copy(self, request: CopyRequest) -> dict[str, Any]:
        answer: dict[str, Any] = {}
        for shard in request.shards:
            answer[shard] = await self.store.rows(self.shard(shard))
        answer["status"] = "success"
        return answer

    async def read(self, request: ShardReadRequest) -> dict[str, Any]:
        rows = await self.store.rows(self.shard(request.shard), request.Stud_id.low,
                                     request.Stud_id.high)
        return {"data": rows, "status": "success"}

    async def write(self, request: ShardWriteRequest) -> dict[str, Any]:
        rows = [self.row(row) for row in request.data]
        await self.store.write(self.shard(request.shard), rows)
        return {"message": "Data entries added", "current_idx": request.curr_idx + len(rows),
                "status": "success"}

    async def insert(self, request: ShardWriteRequest) -> dict[str, Any]:
        """Like /write, but a row whose Stud_id is here already is left alone and named."""
        rows = [self.row(row) for row in request.data]
        existing = await self.store.insert_new(self.shard(request.shard), rows)
        return {"message": "Data entries added", "existing": existing,
                "current_idx": request.curr_idx + len(rows) - len(existing), "status": "success"}

    async def update(self, request: ShardUpdateRequest) -> dict[str, Any]:
        row = self.row(request.data)
        if row["Stud_id"] != request.Stud_id:
            raise BadRequest("<Error> data.Stud_id must equal Stud_id: an update cannot move a row")
        if not await self.store.update(self.shard(request.shard), request.Stud_id, row):
            raise NotFound(f"<Error> No data entry with Stud_id:{request.Stud_id}")
        return {"message": f"Data entry for Stud_id:{request.Stud_id} updated",
                "status": "success"}

    async def delete(self, request: ShardDelRequest) -> dict[str, Any]:
        if not await self.store.delete(self.shard(request.shard), request.Stud_id):
            raise NotFound(f"<Error> No data entry with Stud_id:{request.Stud_id}")
        return {"message": f"Data entry with Stud_id:{request.Stud_id} removed",
                "status": "success"}

    async def erase(self, request: ShardIdsRequest) -> dict[str, Any]:
        await self.store.delete_many(self.shard(request.shard), request.Stud_ids)
        return {"message": f"{len(request.Stud_ids)} Stud_ids erased", "status": "success"}


    # ---- replication through the shard's log (--replication majority) --------------------
    async def repl_step(self, request: StepRequest) -> dict[str, Any]:
        """A message for this server's replica of the shard: the replies, once journaled."""
        try:
            message = decode(request.message)
        except WireError as exc:
            raise BadRequest(f"<Error> {exc}") from None
        if message.to != self.name:
            raise BadRequest(f"<Error> a message for {message.to} sent to {self.name}")
        host = self.replicas.host(self.shard(request.shard))
        try:
            replies = await host.receive(message, request.peers)
        except NotCommitted as exc:
            raise Unavailable(f"<Error> {exc}") from None
        return {"replies": [encode(reply) for reply in replies], "status": "success"}

    async def repl_propose(self, request: ProposeRequest) -> dict[str, Any]:
        """A change of the shard's rows, at its primary: answered once committed
        (or at once, logging nothing, when the rows refuse it: changes.py)."""
        change = parse_change(self.store.schema, request.change)
        shard = self.shard(request.shard)
        try:
            result = await self.replicas.changes(shard).make(change)
        except NotPrimary as exc:
            raise Conflict(f"<Error> {exc}") from None
        except NotCommitted as exc:
            raise Unavailable(f"<Error> {exc}") from None
        return {"result": result, "status": "success"}

    async def repl_read(self, request: ShardReadRequest) -> dict[str, Any]:
        """A linearizable read, at the primary: served once its rows hold every change
        committed before the read arrived."""
        shard = self.shard(request.shard)
        try:
            await self.replicas.host(shard).readable(self.replicas.commit_timeout)
        except NotPrimary as exc:
            raise Conflict(f"<Error> {exc}") from None
        except NotCommitted as exc:
            raise Unavailable(f"<Error> {exc}") from None
        return await self.read(request)

    async def repl_state(self, request: FrontRequest) -> Answer:
        """Every configured shard's replica: its role, term, commit and applied index."""
        states = [await self.replicas.host(shard).state() for shard in self.store.shards]
        return json_answer({"replicas": [dataclasses.asdict(s) for s in states],
                            "status": "success"})


class ConfigHandler(JsonHandler):
    def initialize(self, store: ShardStore, name: str) -> None:
        self.store = store
        self.name = name

    async def post(self) -> None:
        request = self.parse(ConfigRequest)
        await self.store.configure(request.schema_, request.shards)
        configured = ", ".join(f"{self.name}:{shard}" for shard in request.shards)
        self.send({"message": f"{configured} configured", "status": "success"})


def make_app(store: ShardStore, name: str,
             front_methods: dict[str, tuple[str, ...]]) -> tornado.web.Application:
    """/config, and 405 (with ``Allow``) for the front end's paths with another method."""
    return tornado.web.Application(
        [(r"/config", ConfigHandler, {"store": store, "name": name}),
         *[(path, FrontOnlyHandler, {"allow": methods})
           for path, methods in front_methods.items()]],
        log_function=lambda handler: None,
    )


async def _run(args: argparse.Namespace) -> None:
    name = server_id_from_env()
    engine: LocalEngine | None = None
    uri = args.mongo_uri
    if not uri:
        engine = LocalEngine(Path(args.data_root) / name / "engine")
        uri = await engine.start()
    # No retryable writes: the balancer, not the driver, decides what a failed write means
    # (it evicts the replica), and each retryable write costs the engine a session record
    # (about 7% of its CPU per inserted row, measured here).
    client: AsyncMongoClient[Any] = AsyncMongoClient(uri, serverSelectionTimeoutMS=10000,
                                                     retryWrites=False)
    store = ShardStore(client[args.db_name], RowCache(max_rows=args.row_cache_rows))
    replicas = Replicas(name, store, heartbeat_interval=args.repl_heartbeat_interval,
                        request_timeout=args.repl_timeout, commit_timeout=args.commit_timeout)
    endpoints = ShardEndpoints(store, name, replicas)
    front = Front(endpoints.route, make_app(store, name, endpoints.methods()), max_body=MAX_BODY)

    def listening(port: int) -> None:
        log.info("%s on port %d, database %s, shards %s", name, port, uri,
                 store.shards or "none yet")

    async def stop() -> None:
        await endpoints.replicas.close()
        store.close()
        await client.close()
        if engine is not None:
            engine.stop()

    await serve(front, args.host, args.port, args.ready_fd, start=store.load, stop=stop,
                listening=listening)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dslab.shard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")))
    parser.add_argument("--mongo-uri", default=os.environ.get("MONGO_URI", ""),
                        help="MongoDB to use (env MONGO_URI); none: start a local engine")
    parser.add_argument("--data-root", default=os.environ.get("SHARD_DATA_ROOT", "./data"),
                        help="where a local engine keeps <server name>/ (env SHARD_DATA_ROOT)")
    parser.add_argument("--db-name", default=os.environ.get("DB_NAME", "studdb"))
    parser.add_argument("--row-cache-rows", type=int,
                        default=int(os.environ.get("ROW_CACHE_ROWS", "200000")),
                        help="reads of a shard of up to this many rows are answered from memory "
                             "(env ROW_CACHE_ROWS; 0: every read asks the engine)")
    parser.add_argument("--repl-heartbeat-interval", type=float,
                        default=float(os.environ.get("REPL_HEARTBEAT_INTERVAL", "0.1")),
                        help="seconds between a primary's heartbeats to its secondaries, which "
                             "carry the commit index and resend what was lost "
                             "(env REPL_HEARTBEAT_INTERVAL)")
    parser.add_argument("--repl-timeout", type=float,
                        default=float(os.environ.get("REPL_TIMEOUT", "2")),
                        help="seconds a message to a peer may take (env REPL_TIMEOUT)")
    parser.add_argument("--commit-timeout", type=float,
                        default=float(os.environ.get("COMMIT_TIMEOUT", "10")),
                        help="seconds a change waits for a majority before it is answered "
                             "503, outcome unknown (env COMMIT_TIMEOUT)")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "WARNING"))
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    die_with_parent()
    install_uvloop()
    asyncio.run(_run(args))
