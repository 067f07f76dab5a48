"""JSON bodies into pydantic models, with errors in the contract's words. Pure, no I/O."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import BadRequest

__all__ = ["describe_validation_error", "parse_json_object", "parse_model"]

M = TypeVar("M", bound=BaseModel)


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("<Error> Request body is not valid JSON") from None
    except RecursionError:
        raise BadRequest("<Error> Request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest("<Error> Request body must be a JSON object")
    return data


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "<Error> Invalid payload: " + "; ".join(parts)


def parse_model(model: type[M], body: bytes) -> M:
    data = parse_json_object(body)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc)) from None
