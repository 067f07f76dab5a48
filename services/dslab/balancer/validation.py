"""Payload validation for the Part 1 balancer: pure, no I/O.

pydantic does the shape and type checks (strict: ``"2"`` is not an integer and ``true`` is not
1); the contract's two exact "Length of hostname list..." messages are checked here too, so
the HTTP layer only maps ``BadRequest`` to a 400.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ..common.errors import BadRequest
from ..supervisor.names import is_dns_label

__all__ = ["ScaleRequest", "parse_json_object", "parse_add", "parse_rm", "describe_validation_error"]

ADD_TOO_MANY = "<Error> Length of hostname list is more than newly added instances"
RM_TOO_MANY = "<Error> Length of hostname list is more than removable instances"


def _dns_label(name: str) -> str:
    if not is_dns_label(name):
        raise ValueError(
            f"{name!r} is not a valid hostname: use 1-63 letters, digits or '-', "
            "not starting or ending with '-'"
        )
    return name


Hostname = Annotated[str, AfterValidator(_dns_label)]


class ScaleRequest(BaseModel):
    """Body of POST /add and DELETE /rm."""

    model_config = ConfigDict(extra="forbid", strict=True)

    n: int = Field(ge=1)
    hostnames: list[Hostname] = Field(default_factory=list)

    def duplicate_names(self) -> list[str]:
        seen: set[str] = set()
        dups: list[str] = []
        for name in self.hostnames:
            if name.lower() in seen:
                dups.append(name)
            seen.add(name.lower())
        return dups


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("<Error> Request body is not valid JSON") from None
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


def _parse(body: bytes, too_many_message: str) -> ScaleRequest:
    data = parse_json_object(body)
    try:
        request = ScaleRequest.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc)) from None
    if len(request.hostnames) > request.n:
        raise BadRequest(too_many_message)
    dups = request.duplicate_names()
    if dups:
        raise BadRequest(f"<Error> Duplicate hostnames in request: {', '.join(dups)}")
    return request


def parse_add(body: bytes) -> ScaleRequest:
    return _parse(body, ADD_TOO_MANY)


def parse_rm(body: bytes) -> ScaleRequest:
    return _parse(body, RM_TOO_MANY)
