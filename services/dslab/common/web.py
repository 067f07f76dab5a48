"""Tornado plumbing shared by every service: JSON in, JSON out, errors in the contract's shape."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import orjson
import tornado.web
from pydantic import BaseModel

from .auth import authorized
from .errors import ApiError, error_body
from .limits import MAX_BODY
from .payload import parse_model

__all__ = ["HARD_BODY_LIMIT", "AdminHandler", "FrontOnlyHandler", "JsonHandler",
           "StreamedJsonHandler"]

HARD_BODY_LIMIT = 1 << 30  # Tornado drops the connection past this; below it, JsonHandler's 413

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class JsonHandler(tornado.web.RequestHandler):
    """JSON in, JSON out; ``write_error`` is the one place an exception becomes the contract's
    ``{"message": "<Error> ...", "status": "failure"}``. A body over ``MAX_BODY`` is a 413."""

    def send(self, payload: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(payload))

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
            message = "Internal error: see the service's log"
        if self.get_status() == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        if self.get_status() == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="dslab admin"')
        self.set_header("Content-Type", "application/json")
        self.finish(error_body(message))

    def allowed_methods(self) -> list[str]:
        """The methods this path serves (a 405's ``Allow``): those the handler defines."""
        return [m for m in self.SUPPORTED_METHODS
                if getattr(type(self), m.lower()) is not getattr(tornado.web.RequestHandler,
                                                                 m.lower())]

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            log.info("%s %s -> %d %s", self.request.method, self.request.path, value.status,
                     value.message)
        else:
            super().log_exception(typ, value, tb)

    def body(self) -> bytes:
        _check_size(len(self.request.body))
        return self.request.body

    def parse(self, model: type[M]) -> M:
        return parse_model(model, self.body())


class AdminHandler(JsonHandler):
    """An endpoint that changes membership or configuration: with the application's
    ``admin_token`` set, it answers only a request that carries it (``common/auth.py``); the
    check comes before the body is read."""

    def prepare(self) -> None:
        token = self.settings.get("admin_token")
        if token and not authorized(self.request.headers.get("Authorization"), token):
            raise ApiError("<Error> This endpoint needs the admin token: "
                           "'Authorization: Bearer <token>'", 401)


class FrontOnlyHandler(JsonHandler):
    """A path the lean front end (``front.py``) serves, reached with another method: it defines
    no method, so Tornado answers 405 in the error shape, with the methods the front end serves
    there (``allow``) in ``Allow``. Other arguments (an app's shared ones) are ignored."""

    def initialize(self, allow: tuple[str, ...] = (), **_: Any) -> None:
        self.allow = list(allow)

    def allowed_methods(self) -> list[str]:
        return self.allow


@tornado.web.stream_request_body
class StreamedJsonHandler(JsonHandler):
    """A ``JsonHandler`` for Tornado's own ``HTTPServer``: the body is streamed in and kept up
    to ``MAX_BODY`` bytes; past that it is read and dropped, and ``parse`` answers 413.
    (Answering before the body is read would reset the connection under a client that is still
    sending, and it would never see the 413.) Make the server with
    ``max_body_size=HARD_BODY_LIMIT`` so that Tornado leaves the limit to this class."""

    _body: list[bytes]
    _body_size: int

    def prepare(self) -> None:
        self._body = []
        self._body_size = 0

    def data_received(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size <= MAX_BODY:
            self._body.append(chunk)

    def body(self) -> bytes:
        _check_size(self._body_size)
        return b"".join(self._body)


def _check_size(size: int) -> None:
    if size > MAX_BODY:
        raise ApiError(f"<Error> Request body of {size} bytes is over the limit of "
                       f"{MAX_BODY} bytes", 413)

