"""The Part 2 balancer's endpoints: /read, /write, /update, /del on the lean front end
(``DataEndpoints``); /init, /status, /add, /rm and GET /openapi.json (the contract as OpenAPI 3)
as a Tornado application behind it."""

from __future__ import annotations

import time
from typing import Any

import tornado.web

from ..common.endpoints import json_endpoint
from ..common.errors import ApiError
from ..common.front import Answer, FrontRequest, Handler
from ..common.metrics import metrics_handler
from ..common.web import AdminHandler, FrontOnlyHandler, JsonHandler
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

__all__ = ["DataEndpoints", "add_message", "make_app"]


def add_message(names: list[str]) -> str:
    """'Add Server:4 and Server:58127', as the contract words it."""
    shown = []
    for name in names:
        stem = name.rstrip("0123456789")
        shown.append(f"{stem}:{name[len(stem):]}" if stem != name and stem else name)
    listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"
    return f"Add {listed}"


class _Handler(JsonHandler):
    def initialize(self, cluster: ShardCluster) -> None:
        self.cluster = cluster


class InitHandler(_Handler, AdminHandler):
    async def post(self) -> None:
        await self.cluster.init(self.parse(InitRequest))
        self.send({"message": "Configured Database", "status": "success"})


class StatusHandler(_Handler):
    def get(self) -> None:
        self.send(self.cluster.status())


class AddHandler(_Handler, AdminHandler):
    async def post(self) -> None:
        n, names = await self.cluster.add(self.parse(AddRequest))
        self.send({"N": n, "message": add_message(names), "status": "successful"})


class RmHandler(_Handler, AdminHandler):
    async def delete(self) -> None:
        n, removed = await self.cluster.rm(self.parse(RmRequest))
        self.send({"message": {"N": n, "servers": removed}, "status": "successful"})


class DataEndpoints:
    """/read, /write, /update and /del on the lean front end (``common/front.py``): no
    Tornado handler per request on the path every client request takes."""

    def __init__(self, cluster: ShardCluster) -> None:
        self.cluster = cluster
        self._routes: dict[tuple[bytes, str], Handler] = {
            (b"POST", "/read"): self._measured("read", json_endpoint(ReadRequest, self.read)),
            (b"POST", "/write"): self._measured("write", json_endpoint(WriteRequest, self.write)),
            (b"PUT", "/update"): self._measured("update",
                                                json_endpoint(UpdateRequest, self.update)),
            (b"DELETE", "/del"): self._measured("del", json_endpoint(DelRequest, self.delete)),
            (b"GET", "/metrics"): metrics_handler(cluster.metrics.registry),
        }

    def _measured(self, endpoint: str, handler: Handler) -> Handler:
        metrics = self.cluster.metrics
        latency = metrics.latency.labels(endpoint)

        async def measured(request: FrontRequest) -> Answer:
            started = time.perf_counter()
            answer = await handler(request)
            latency.observe(time.perf_counter() - started)
            metrics.requests.labels(endpoint, str(answer.status)).inc()
            return answer
        return measured

    def route(self, method: bytes, path: str) -> Handler | None:
        return self._routes.get((method, path))

    async def read(self, request: ReadRequest) -> dict[str, Any]:
        shards, rows = await self.cluster.read(request.Stud_id.low, request.Stud_id.high)
        return {"shards_queried": shards, "data": rows, "status": "success"}

    async def write(self, request: WriteRequest) -> dict[str, Any]:
        count = await self.cluster.write(request.data)
        return {"message": f"{count} Data entries added", "status": "success"}

    async def update(self, request: UpdateRequest) -> dict[str, Any]:
        await self.cluster.update(request.Stud_id, request.data)
        return {"message": f"Data entry for Stud_id: {request.Stud_id} updated",
                "status": "success"}

    async def delete(self, request: DelRequest) -> dict[str, Any]:
        await self.cluster.delete(request.Stud_id)
        return {"message": f"Data entry with Stud_id:{request.Stud_id} removed from all replicas",
                "status": "success"}


class OpenApiHandler(_Handler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(document_json("db"))


class NotFoundHandler(JsonHandler):
    def prepare(self) -> None:
        raise ApiError(f"<Error> '{self.request.path}' endpoint does not exist", 404)


def make_app(cluster: ShardCluster, admin_token: str | None = None) -> tornado.web.Application:
    """``admin_token``: required by /init, /add and /rm when set (``common/auth.py``)."""
    args = {"cluster": cluster}
    front_only = [(f"/{path}", FrontOnlyHandler, {"allow": (method,)}) for path, method in
                  [("read", "POST"), ("write", "POST"), ("update", "PUT"), ("del", "DELETE"),
                   ("metrics", "GET")]]
    return tornado.web.Application(
        [*[(rf"/{path}", handler, args) for path, handler in [
            ("init", InitHandler), ("status", StatusHandler), ("add", AddHandler),
            ("rm", RmHandler), (r"openapi\.json", OpenApiHandler)]], *front_only],
        default_handler_class=NotFoundHandler,
        log_function=lambda handler: None,
        admin_token=admin_token,
    )
