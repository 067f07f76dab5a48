"""The project's errors, and their one translation into the HTTP contract.

    ApiError (status, message)       what a client did wrong or what could not be done
    ├── BadRequest          400
    ├── NotFound            404
    ├── Conflict            409
    └── Unavailable         503

Every error a balancer answers has the contract's shape
``{"message": "<Error> ...", "status": "failure"}``; ``error_body`` is the only place that
builds it.
"""

from __future__ import annotations

import json

__all__ = ["ApiError", "BadRequest", "Conflict", "NotFound", "Unavailable", "error_body"]


class ApiError(Exception):
    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Unavailable(ApiError):
    status = 503


def error_body(message: str) -> bytes:
    if not message.startswith("<Error>"):
        message = f"<Error> {message}"
    return json.dumps({"message": message, "status": "failure"}).encode()
