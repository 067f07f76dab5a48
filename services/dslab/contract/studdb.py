"""Part 2 request bodies and rows, validated: pure, no I/O.

Strict types throughout (``"2255"`` is not a Stud_id, ``true`` is not a mark). Rows are checked
against the schema given to /init: exactly its columns, each of its dtype (``Number``: a signed
64-bit integer or a finite float, never a boolean; ``String``: text the engine can store).
Stud_id must be an integer. Everything stored is within what the engine accepts
(``common.limits``), so a request that passes here cannot fail on a shard server for its content.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..common.errors import BadRequest
from ..common.limits import (
    INT64_MAX,
    MAX_ROWS,
    Int64,
    NonNegInt64,
    check_field_name,
    is_int64,
    is_storable_string,
)
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
    "StoredIdRange",
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


ColumnName = Annotated[str, check_field_name]


class Schema(_Strict):
    columns: list[ColumnName] = Field(min_length=1, max_length=64)
    dtypes: list[Literal["Number", "String"]] = Field(min_length=1, max_length=64)

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
    Stud_id_low: NonNegInt64
    Shard_id: ShardId
    Shard_size: int = Field(ge=1, le=INT64_MAX)

    @model_validator(mode="after")
    def _in_range(self) -> ShardSpec:
        if self.Stud_id_low + self.Shard_size - 1 > INT64_MAX:
            raise ValueError(f"shard {self.Shard_id} ends past the largest Stud_id, 2^63 - 1")
        return self


class IdRange(_Strict):
    """A read's bounds at the balancer: any integers (it asks each shard only for its part)."""

    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self) -> IdRange:
        if self.high < self.low:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        return self


class StoredIdRange(IdRange):
    """A read's bounds at a shard server: what the engine can compare (signed 64-bit)."""

    low: Int64
    high: Int64


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
    data: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ROWS)


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
    Stud_id: StoredIdRange


class ShardWriteRequest(_Strict):
    shard: ShardId
    curr_idx: NonNegInt64
    data: list[dict[str, Any]]  # a refill carries a whole shard: no MAX_ROWS here


class ShardUpdateRequest(_Strict):
    shard: ShardId
    Stud_id: Int64
    data: dict[str, Any]


class ShardDelRequest(_Strict):
    shard: ShardId
    Stud_id: Int64


class ShardIdsRequest(_Strict):
    """POST /exists and POST /erase: the balancer's write path, not the contract."""

    shard: ShardId
    Stud_ids: list[Int64]


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
            ok = _is_int(value) and is_int64(value)
        elif dtype == "Number":
            ok = ((_is_int(value) and is_int64(value))
                  or (isinstance(value, float) and math.isfinite(value)))
        else:
            ok = isinstance(value, str) and is_storable_string(value)
        if not ok:
            kind = ("an integer (signed 64-bit)" if column == "Stud_id"
                    else "a Number (a signed 64-bit integer or a finite float)"
                    if dtype == "Number" else "a String (valid Unicode text)")
            raise BadRequest(f"<Error> Row {_show(row)}: {column} must be {kind}, "
                             f"got {_short(value)}")
        clean[column] = value
    return clean


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    """A value for an error message: at most 60 characters (a 5 000-digit id stays readable)."""
    if _is_int(value) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _show(row: dict[str, Any]) -> str:
    stud_id = row.get("Stud_id")
    return f"with Stud_id {_short(stud_id)}" if stud_id is not None else _short(row)
