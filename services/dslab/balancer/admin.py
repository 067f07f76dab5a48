"""The Part 1 balancer's admin endpoints, as a Tornado application: GET /rep, POST /add, DELETE /rm.

Every error becomes the contract's ``{"message": "<Error> ...", "status": "failure"}`` in
``JsonHandler.write_error``, the one place that does it (Part 2's balancer reuses it).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import tornado.web

from ..common.errors import ApiError, error_body
from .membership import ReplicaSet
from .validation import parse_add, parse_rm

__all__ = ["make_admin_app", "ADMIN_PATHS", "JsonHandler"]

log = logging.getLogger(__name__)

ADMIN_PATHS = frozenset({"/rep", "/add", "/rm"})


def _ok(message: Any) -> dict[str, Any]:
    return {"message": message, "status": "successful"}


class JsonHandler(tornado.web.RequestHandler):
    """JSON in, JSON out, errors in the contract's shape."""

    def send(self, payload: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            self.set_status(exc.status)
            message = exc.message
        elif status_code == 405:
            message = f"<Error> Method {self.request.method} is not allowed on '{self.request.path}'"
        elif isinstance(exc, tornado.web.HTTPError):
            message = exc.log_message or self._reason
        else:
            message = "Internal error: see the balancer's log"
        self.set_header("Content-Type", "application/json")
        self.finish(error_body(message))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            log.info("%s %s -> %d %s", self.request.method, self.request.path, value.status,
                     value.message)
        else:
            super().log_exception(typ, value, tb)


class _ReplicaHandler(JsonHandler):
    def initialize(self, replicas: ReplicaSet) -> None:
        self.replicas = replicas

    def send_replicas(self, names: list[str]) -> None:
        self.send(_ok({"N": len(names), "replicas": names}))


class RepHandler(_ReplicaHandler):
    def get(self) -> None:
        self.send_replicas(self.replicas.names())


class AddHandler(_ReplicaHandler):
    async def post(self) -> None:
        request = parse_add(self.request.body)
        self.send_replicas(await self.replicas.add(request.n, request.hostnames))


class RmHandler(_ReplicaHandler):
    async def delete(self) -> None:
        request = parse_rm(self.request.body)
        _, names = await self.replicas.remove(request.n, request.hostnames)
        self.send_replicas(names)


class NotAllowedHandler(JsonHandler):
    """Anything that is neither an admin endpoint nor a GET to proxy."""

    def prepare(self) -> None:
        path, method = self.request.path, self.request.method
        if path in ADMIN_PATHS:
            raise ApiError(f"<Error> Method {method} is not allowed on '{path}'", 405)
        raise ApiError(f"<Error> Method {method} is not allowed: only GET is proxied to replicas",
                       405)


def make_admin_app(replicas: ReplicaSet) -> tornado.web.Application:
    args = {"replicas": replicas}
    return tornado.web.Application(
        [(r"/rep", RepHandler, args), (r"/add", AddHandler, args), (r"/rm", RmHandler, args)],
        default_handler_class=NotAllowedHandler,
    )
