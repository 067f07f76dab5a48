"""A history as a file: JSON lines, one operation a line, in any order::

    {"process": 3, "op": "write", "key": 15659, "value": 175, "start": 26.150, "end": 26.300, "outcome": "ok"}

``op``: write, read or insert; ``value``: the version written or read, null for a read of a
missing row; ``start``/``end``: seconds on one clock; ``outcome``: ok, fail or unknown;
``detail`` (optional): a status code or exception. Each line is validated; a file that
cannot be read raises ``HistoryFileError`` naming the file and the line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .history import History, Kind, Op, Outcome

__all__ = ["HistoryFileError", "read_history", "write_history"]


class HistoryFileError(ValueError):
    """A history file that cannot be read: the message names the file and the line."""


class _Line(BaseModel):
    """One line of a history file (strict: "3" is not a process, 1.5 not a key)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    process: int
    op: Literal["write", "read", "insert"]
    key: int
    value: int | None
    start: float
    end: float
    outcome: Literal["ok", "fail", "unknown"]
    detail: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> _Line:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        if self.value is None and self.op != "read":
            raise ValueError(f"a {self.op}'s value is the version written, not null")
        return self


def write_history(ops: Iterable[Op], path: str | os.PathLike[str]) -> None:
    """``ops`` as JSON lines at ``path`` (ids are not kept: a reader numbers lines)."""
    with open(path, "w", encoding="utf-8") as f:
        for op in ops:
            line: dict[str, Any] = {"process": op.process, "op": op.kind.value, "key": op.key,
                                    "value": op.value, "start": op.start, "end": op.end,
                                    "outcome": op.outcome.value}
            if op.detail:
                line["detail"] = op.detail
            f.write(json.dumps(line) + "\n")


def read_history(path: str | os.PathLike[str]) -> History:
    """The history in a JSON-lines file, ops numbered in line order (blank lines skipped).
    Raises ``HistoryFileError`` naming the line of the first malformed one, ``OSError`` if
    the file cannot be opened."""
    history = History()
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise HistoryFileError(f"{path} line {number}: not UTF-8 text") from None
            if not text.strip():
                continue
            try:
                line = _Line.model_validate_json(text)
            except ValidationError as exc:
                raise HistoryFileError(f"{path} line {number}: {_describe(exc)}") from None
            history.add(line.process, Kind(line.op), line.key, line.value, line.start,
                        line.end, Outcome(line.outcome), line.detail)
    return history


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
