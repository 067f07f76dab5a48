"""The Part 2 balancer's endpoints (Tornado): /init, /status, /add, /rm, /read, /write, /update,
/del, and GET /openapi.json (the contract as OpenAPI 3)."""

from __future__ import annotations

import tornado.web

from ..common.errors import ApiError
from ..common.web import StreamedJsonHandler
from ..contract.studdb import (
    AddRequest,
    DelRequest,
    InitRequest,
    ReadRequest,
    RmRequest,
    UpdateRequest,
    WriteRequest,
)
from ..openapi import document_json
from .cluster import ShardCluster

__all__ = ["add_message", "make_app"]


def add_message(names: list[str]) -> str:
    """'Add Server:4 and Server:58127', as the contract words it."""
    shown = []
    for name in names:
        stem = name.rstrip("0123456789")
        shown.append(f"{stem}:{name[len(stem):]}" if stem != name and stem else name)
    listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"
    return f"Add {listed}"


class _Handler(StreamedJsonHandler):
    def initialize(self, cluster: ShardCluster) -> None:
        self.cluster = cluster


class InitHandler(_Handler):
    async def post(self) -> None:
        await self.cluster.init(self.parse(InitRequest))
        self.send({"message": "Configured Database", "status": "success"})


class StatusHandler(_Handler):
    def get(self) -> None:
        self.send(self.cluster.status())


class AddHandler(_Handler):
    async def post(self) -> None:
        n, names = await self.cluster.add(self.parse(AddRequest))
        self.send({"N": n, "message": add_message(names), "status": "successful"})


class RmHandler(_Handler):
    async def delete(self) -> None:
        n, removed = await self.cluster.rm(self.parse(RmRequest))
        self.send({"message": {"N": n, "servers": removed}, "status": "successful"})


class ReadHandler(_Handler):
    async def post(self) -> None:
        request = self.parse(ReadRequest)
        shards, rows = await self.cluster.read(request.Stud_id.low, request.Stud_id.high)
        self.send({"shards_queried": shards, "data": rows, "status": "success"})


class WriteHandler(_Handler):
    async def post(self) -> None:
        count = await self.cluster.write(self.parse(WriteRequest).data)
        self.send({"message": f"{count} Data entries added", "status": "success"})


class UpdateHandler(_Handler):
    async def put(self) -> None:
        request = self.parse(UpdateRequest)
        await self.cluster.update(request.Stud_id, request.data)
        self.send({"message": f"Data entry for Stud_id: {request.Stud_id} updated",
                   "status": "success"})


class DelHandler(_Handler):
    async def delete(self) -> None:
        request = self.parse(DelRequest)
        await self.cluster.delete(request.Stud_id)
        self.send({"message": f"Data entry with Stud_id:{request.Stud_id} removed from all replicas",
                   "status": "success"})


class OpenApiHandler(_Handler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(document_json("db"))


class NotFoundHandler(StreamedJsonHandler):
    def prepare(self) -> None:
        raise ApiError(f"<Error> '{self.request.path}' endpoint does not exist", 404)


def make_app(cluster: ShardCluster) -> tornado.web.Application:
    args = {"cluster": cluster}
    return tornado.web.Application(
        [(rf"/{path}", handler, args) for path, handler in [
            ("init", InitHandler), ("status", StatusHandler), ("add", AddHandler),
            ("rm", RmHandler), ("read", ReadHandler), ("write", WriteHandler),
            ("update", UpdateHandler), ("del", DelHandler), (r"openapi\.json", OpenApiHandler)]],
        default_handler_class=NotFoundHandler,
        log_function=lambda handler: None,
    )
