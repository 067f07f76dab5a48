"""Part 2 request bodies and rows, validated: pure, no I/O.

Strict types throughout (``"2255"`` is not a Stud_id, ``true`` is not a mark). Rows are checked
against the schema given to /init: exactly its columns, each of its dtype (``Number``: an
integer or a finite float, never a boolean; ``String``: text). Stud_id must be an integer.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..common.errors import BadRequest
from ..supervisor.names import is_dns_label

__all__ = [
    "ADD_N_TOO_SMALL",
    "RM_TOO_MANY",
    "AddRequest",
    "ConfigRequest",
    "CopyRequest",
    "DelRequest",
    "IdRange",
    "InitRequest",
    "ReadRequest",
    "RmRequest",
    "Schema",
    "ShardDelRequest",
    "ShardIdsRequest",
    "ShardReadRequest",
    "ShardSpec",
    "ShardUpdateRequest",
    "ShardWriteRequest",
    "UpdateRequest",
    "WriteRequest",
    "expand_template",
    "is_template",
    "validate_row",
]

ADD_N_TOO_SMALL = "<Error> Number of new servers (n) is greater than newly added instances"
RM_TOO_MANY = "<Error> Length of server list is more than removable instances"

_SHARD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # becomes a collection name
_TEMPLATE = re.compile(r"^([A-Za-z0-9-]{1,50})\[(\w*)\]$")  # "Server[5]": a random id


def _shard_id(value: str) -> str:
    if not _SHARD_ID.match(value):
        raise ValueError(f"{value!r} is not a valid Shard_id: use 1-64 letters, digits, '_' or '-'")
    return value


def _server_name(value: str) -> str:
    if not (is_dns_label(value) or is_template(value)):
        raise ValueError(f"{value!r} is not a valid server name: use a DNS label (1-63 letters, "
                         "digits or '-') or a template such as 'Server[5]'")
    return value


ShardId = Annotated[str, AfterValidator(_shard_id)]
ServerName = Annotated[str, AfterValidator(_server_name)]


def is_template(name: str) -> bool:
    return bool(_TEMPLATE.match(name))


def expand_template(name: str, random_id: int) -> str:
    """'Server[5]' -> 'Server58127' for random_id 58127; other names stay as they are."""
    match = _TEMPLATE.match(name)
    return f"{match.group(1)}{random_id}" if match else name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Schema(_Strict):
    columns: list[str] = Field(min_length=1)
    dtypes: list[Literal["Number", "String"]] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Schema:
        if len(self.columns) != len(self.dtypes):
            raise ValueError("columns and dtypes must have the same length")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError("column names must be distinct")
        if "Stud_id" not in self.columns:
            raise ValueError("the schema needs a Stud_id column")
        if self.dtypes[self.columns.index("Stud_id")] != "Number":
            raise ValueError("Stud_id must be a Number")
        return self


class ShardSpec(_Strict):
    Stud_id_low: int = Field(ge=0)
    Shard_id: ShardId
    Shard_size: int = Field(ge=1)


class IdRange(_Strict):
    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self) -> IdRange:
        if self.high < self.low:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        return self


def _distinct(values: list[str], what: str) -> None:
    lowered = [v.lower() for v in values]
    dups = sorted({v for v, lv in zip(values, lowered) if lowered.count(lv) > 1})
    if dups:
        raise ValueError(f"{what} listed twice: {', '.join(dups)}")


class InitRequest(_Strict):
    N: int = Field(ge=1, le=100)
    schema_: Schema = Field(alias="schema")
    shards: list[ShardSpec] = Field(min_length=1)
    servers: dict[ServerName, list[ShardId]] | None = None
    replicas: int | None = Field(default=None, ge=1)  # ours: replicas per shard when placing

    @model_validator(mode="after")
    def _consistent(self) -> InitRequest:
        _distinct([s.Shard_id for s in self.shards], "Shard_id")
        known = {s.Shard_id for s in self.shards}
        if self.servers is not None:
            if len(self.servers) != self.N:
                raise ValueError(f"N is {self.N} but servers lists {len(self.servers)}")
            _distinct(list(self.servers), "server")
            placed: set[str] = set()
            for server, shard_ids in self.servers.items():
                _distinct(shard_ids, f"a shard of {server}")
                unknown = sorted(set(shard_ids) - known)
                if unknown:
                    raise ValueError(f"{server} is placed on unknown shard(s): {', '.join(unknown)}")
                placed |= set(shard_ids)
            empty = sorted(known - placed)
            if empty:
                raise ValueError(f"shard(s) with no server: {', '.join(empty)}")
            if self.replicas is not None:
                raise ValueError("replicas is only for random placement (servers left out)")
        elif self.replicas is not None and self.replicas > self.N:
            raise ValueError(f"{self.replicas} replicas per shard need at least as many servers "
                             f"(N is {self.N})")
        return self


class AddRequest(_Strict):
    n: int = Field(ge=1, le=100)
    new_shards: list[ShardSpec] = Field(default_factory=list)
    servers: dict[ServerName, list[ShardId]]

    @model_validator(mode="after")
    def _consistent(self) -> AddRequest:
        _distinct([s.Shard_id for s in self.new_shards], "Shard_id")
        _distinct(list(self.servers), "server")
        for server, shard_ids in self.servers.items():
            _distinct(shard_ids, f"a shard of {server}")
        return self


class RmRequest(_Strict):
    n: int = Field(ge=1)
    servers: list[ServerName] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> RmRequest:
        _distinct(self.servers, "server")
        return self


class ReadRequest(_Strict):
    Stud_id: IdRange


class WriteRequest(_Strict):
    data: list[dict[str, Any]] = Field(min_length=1)


class UpdateRequest(_Strict):
    Stud_id: int
    data: dict[str, Any]


class DelRequest(_Strict):
    Stud_id: int


# ---- the shard server's own endpoints ----------------------------------------------------------
class ConfigRequest(_Strict):
    schema_: Schema = Field(alias="schema")
    shards: list[ShardId]


class CopyRequest(_Strict):
    shards: list[ShardId] = Field(min_length=1)


class ShardReadRequest(_Strict):
    shard: ShardId
    Stud_id: IdRange


class ShardWriteRequest(_Strict):
    shard: ShardId
    curr_idx: int = Field(ge=0)
    data: list[dict[str, Any]]


class ShardUpdateRequest(_Strict):
    shard: ShardId
    Stud_id: int
    data: dict[str, Any]


class ShardDelRequest(_Strict):
    shard: ShardId
    Stud_id: int


class ShardIdsRequest(_Strict):
    """POST /exists and POST /erase: the balancer's write path, not the contract."""

    shard: ShardId
    Stud_ids: list[int]


def validate_row(schema: Schema, row: Any) -> dict[str, Any]:
    """The row with exactly the schema's columns, in its order, or a 400 that says why."""
    if not isinstance(row, dict):
        raise BadRequest(f"<Error> A row must be a JSON object, got {row!r}")
    missing = [c for c in schema.columns if c not in row]
    extra = [c for c in row if c not in schema.columns]
    if missing or extra:
        what = []
        if missing:
            what.append(f"missing {', '.join(missing)}")
        if extra:
            what.append(f"unknown {', '.join(map(str, extra))}")
        raise BadRequest(f"<Error> Row {_show(row)}: {'; '.join(what)}")
    clean: dict[str, Any] = {}
    for column, dtype in zip(schema.columns, schema.dtypes):
        value = row[column]
        if column == "Stud_id":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif dtype == "Number":
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value))
        else:
            ok = isinstance(value, str)
        if not ok:
            kind = "an integer" if column == "Stud_id" else f"a {dtype}"
            raise BadRequest(f"<Error> Row {_show(row)}: {column} must be {kind}, got {value!r}")
        clean[column] = value
    return clean


def _show(row: dict[str, Any]) -> str:
    stud_id = row.get("Stud_id")
    return f"with Stud_id {stud_id!r}" if stud_id is not None else repr(row)[:60]
