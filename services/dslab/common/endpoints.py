"""JSON endpoints for the lean front end (``front.py``): a body parsed into a pydantic model,
a coroutine that serves it, and its answer or its error in the contract's shape.

The same translation as ``web.JsonHandler.write_error`` for Tornado's handlers: an ``ApiError``
becomes ``{"message": "<Error> ...", "status": "failure"}`` with its status; anything else is
a bug, left to the front end (502, logged).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from .errors import ApiError, error_body
from .front import Answer, FrontRequest, Handler
from .payload import parse_model

__all__ = ["error_answer", "json_answer", "json_endpoint"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def json_answer(payload: dict[str, Any], status: int = 200) -> Answer:
    return Answer(status, orjson.dumps(payload))


def error_answer(exc: ApiError) -> Answer:
    return Answer(exc.status, error_body(exc.message))


def json_endpoint(model: type[M], serve: Callable[[M], Awaitable[dict[str, Any]]]) -> Handler:
    """A handler that parses the body as ``model`` and answers what ``serve`` returns."""
    async def handler(request: FrontRequest) -> Answer:
        try:
            return json_answer(await serve(parse_model(model, request.payload())))
        except ApiError as exc:
            log.info("%s %s -> %d %s", request.method.decode(), request.uri, exc.status,
                     exc.message)
            return error_answer(exc)
    return handler
