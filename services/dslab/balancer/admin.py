"""The Part 1 balancer's admin endpoints, as a Tornado application: GET /rep, POST /add, DELETE /rm,
and GET /openapi.json (so that path is not proxied to replicas).

Every error becomes the contract's error shape in ``common.web.JsonHandler``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import tornado.web

from ..common.errors import ApiError
from ..common.web import AdminHandler, JsonHandler
from ..openapi import document_json
from .validation import parse_add, parse_rm

__all__ = ["ADMIN_PATHS", "ReplicaAdmin", "make_admin_app"]

log = logging.getLogger(__name__)

ADMIN_PATHS = frozenset({"/rep", "/add", "/rm", "/openapi.json", "/metrics"})


class ReplicaAdmin(Protocol):
    """What the endpoints read and change: the primary's ``ReplicaSet``, or a worker's view
    that passes changes to the primary (``worker.py``)."""

    def names(self) -> list[str]: ...

    async def add(self, n: int, hostnames: Sequence[str]) -> list[str]: ...

    async def remove(self, n: int, hostnames: Sequence[str]) -> tuple[list[str], list[str]]: ...


def _ok(message: Any) -> dict[str, Any]:
    return {"message": message, "status": "successful"}


class _ReplicaHandler(JsonHandler):
    def initialize(self, replicas: ReplicaAdmin) -> None:
        self.replicas = replicas

    def send_replicas(self, names: list[str]) -> None:
        self.send(_ok({"N": len(names), "replicas": names}))


class RepHandler(_ReplicaHandler):
    def get(self) -> None:
        self.send_replicas(self.replicas.names())


class AddHandler(_ReplicaHandler, AdminHandler):
    async def post(self) -> None:
        request = parse_add(self.body())
        self.send_replicas(await self.replicas.add(request.n, request.hostnames))


class RmHandler(_ReplicaHandler, AdminHandler):
    async def delete(self) -> None:
        request = parse_rm(self.body())
        _, names = await self.replicas.remove(request.n, request.hostnames)
        self.send_replicas(names)


class OpenApiHandler(JsonHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(document_json("balancer"))


class NotAllowedHandler(JsonHandler):
    """Anything that is neither an admin endpoint nor a GET to proxy."""

    def allowed_methods(self) -> list[str]:
        return ["GET"]  # what the proxy serves on any path that is not an admin endpoint

    def prepare(self) -> None:
        path, method = self.request.path, self.request.method
        if path in ADMIN_PATHS:
            raise ApiError(f"<Error> Method {method} is not allowed on '{path}'", 405)
        raise ApiError(f"<Error> Method {method} is not allowed: only GET is proxied to replicas",
                       405)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Client errors are the client's business (JsonHandler logs why at INFO); 5xx are ours."""
    status = handler.get_status()
    level = logging.ERROR if status >= 500 else logging.INFO
    log.log(level, "%d %s %s %.1fms", status, handler.request.method, handler.request.uri,
            1000 * handler.request.request_time())


def make_admin_app(replicas: ReplicaAdmin, admin_token: str | None = None) -> tornado.web.Application:
    """``admin_token``: required by /add and /rm when set (``common/auth.py``)."""
    args = {"replicas": replicas}
    return tornado.web.Application(
        [(r"/rep", RepHandler, args), (r"/add", AddHandler, args), (r"/rm", RmHandler, args),
         (r"/openapi\.json", OpenApiHandler)],
        default_handler_class=NotAllowedHandler,
        log_function=_log_request,
        admin_token=admin_token,
    )
