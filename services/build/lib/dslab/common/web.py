"""Tornado plumbing shared by every service: JSON in, JSON out, errors in the contract's shape."""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

import tornado.web
from pydantic import BaseModel

from .errors import ApiError, error_body
from .payload import parse_model

__all__ = ["JsonHandler"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class JsonHandler(tornado.web.RequestHandler):
    """JSON in, JSON out; ``write_error`` is the one place an exception becomes the contract's
    ``{"message": "<Error> ...", "status": "failure"}``."""

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
            message = "Internal error: see the service's log"
        self.set_header("Content-Type", "application/json")
        self.finish(error_body(message))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            log.info("%s %s -> %d %s", self.request.method, self.request.path, value.status,
                     value.message)
        else:
            super().log_exception(typ, value, tb)

    def parse(self, model: type[M]) -> M:
        return parse_model(model, self.request.body)

