"""Payload validation for the Part 1 balancer: pure, no I/O.

pydantic does the shape and type checks (strict: ``"2"`` is not an integer and ``true`` is not
1); the contract's two exact "Length of hostname list..." messages are checked here too, so
the HTTP layer only maps ``BadRequest`` to a 400.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..common.errors import BadRequest
from ..common.payload import parse_model
from ..supervisor.names import is_dns_label

__all__ = ["Hostname", "ScaleRequest", "parse_add", "parse_rm"]

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


def _parse(body: bytes, too_many_message: str) -> ScaleRequest:
    request = parse_model(ScaleRequest, body)
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
