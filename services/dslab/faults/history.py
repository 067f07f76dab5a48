"""A history: every operation a client sent, with when it began and ended and what came of it.

An outcome is ``ok`` (acknowledged), ``fail`` (refused: it certainly did not take effect, a 4xx)
or ``unknown`` (a timeout, a dropped connection or a 5xx: it may or may not have taken effect,
now or later). Jepsen calls the last one ``info``. Times are seconds on one monotonic clock.

A history is kept as JSON lines, one operation a line, in any order (``write_history``,
``read_history``)::

    {"process": 3, "op": "write", "key": 15659, "value": 175, "start": 26.150, "end": 26.300, "outcome": "ok"}

``op``: write, read or insert; ``value``: the version written or read, null for a read of a
missing row; ``start``/``end``: seconds on one clock; ``outcome``: ok, fail or unknown;
``detail`` (optional): a status code or exception.

``synthetic`` makes one such history from an atomic register, for tests and benchmarks.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
import math
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

__all__ = ["History", "HistoryFileError", "Kind", "Op", "Outcome", "outcome_of",
           "read_history", "synthetic", "write_history"]


class Outcome(StrEnum):
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


class Kind(StrEnum):
    INSERT = "insert"  # a row written once (POST /write); checked as a set
    WRITE = "write"    # a register's new version (POST /write for the first, PUT /update after)
    READ = "read"      # a register read (POST /read of one id); value None: no such row


@dataclass(frozen=True)
class Op:
    id: int
    process: int
    kind: Kind
    key: int
    value: int | None
    start: float
    end: float  # when the client stopped waiting (for ``unknown``: not when it took effect)
    outcome: Outcome
    detail: str = ""  # status code or exception, for the reader of an anomaly

    @property
    def returned(self) -> float:
        """When the operation is known to have taken effect by: never, if unknown."""
        return math.inf if self.outcome is Outcome.UNKNOWN else self.end

    def describe(self) -> str:
        what = {Kind.INSERT: "insert", Kind.WRITE: "write", Kind.READ: "read"}[self.kind]
        value = "nothing" if self.value is None else str(self.value)
        verb = "returned" if self.kind is Kind.READ else "of"
        return (f"#{self.id} client {self.process} {what} key {self.key} {verb} {value}, "
                f"{self.start:.3f}-{self.end:.3f} s, {self.outcome.value}"
                + (f" ({self.detail})" if self.detail else ""))


def outcome_of(status: int | None, *, read: bool = False) -> Outcome:
    """A response's outcome: 2xx ok, 4xx fail; a 5xx or no answer (``None``) unknown for a
    write, fail for a read (a read that did not answer has no effect to account for)."""
    if status is not None and 200 <= status < 300:
        return Outcome.OK
    if status is not None and 400 <= status < 500:
        return Outcome.FAIL
    return Outcome.FAIL if read else Outcome.UNKNOWN


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def add(self, process: int, kind: Kind, key: int, value: int | None, start: float,
            end: float, outcome: Outcome, detail: str = "") -> Op:
        op = Op(next(self._ids), process, kind, key, value, start, end, outcome, detail)
        self.ops.append(op)
        return op

    def extend(self, ops: Iterable[Op]) -> None:
        for op in ops:
            self.add(op.process, op.kind, op.key, op.value, op.start, op.end, op.outcome,
                     op.detail)

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)


# --- JSON lines -------------------------------------------------------------------------

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


# --- A synthetic history ----------------------------------------------------------------

def synthetic(keys: int = 8, ops: int = 20_000, readers: int = 6, unknown: float = 0.15,
              refused: float = 0.02, failed_reads: float = 0.02, stale: float | None = None,
              seed: int = 0, writers: int = 1) -> History:
    """``ops`` operations as workload.py's registers record them, on an atomic register: one
    writer per key writing versions 1, 2, 3... one after the other, ``readers`` clients each
    reading a random key at a time. Each operation takes effect at one instant inside its
    interval; a share ``unknown`` of the writes get no answer (a quick 5xx, or a timeout:
    slow) and half of those never take effect; ``refused`` writes and ``failed_reads`` reads
    answer 4xx and take no effect. With ``stale`` (a fraction of the operations, e.g. 0.5),
    one acknowledged read begun after that many returns a version overwritten before it
    began (``_make_stale``): a stale read, never linearizable. ``writers``: writers per key
    (more than workload.py's one: concurrent writes, of distinct versions, a harder search)."""
    rng = random.Random(seed)
    names = sorted(rng.sample(range(16384), keys))
    clients = [(0.0, c) for c in range(keys * writers + readers)]
    version = [0] * keys
    made: list[Op] = []
    took_effect: list[float | None] = []  # the instant each op did, if it did
    while len(made) < ops:
        start, c = heapq.heappop(clients)
        duration = 0.002 + rng.expovariate(1 / 0.008)
        if rng.random() < 0.03:
            duration += rng.uniform(0.05, 0.5)  # a slow one: a lock, a flush
        fate = rng.random()
        value: int | None = None
        if c < keys * writers:  # a writer of key c % keys
            k = c % keys
            version[k] += 1
            kind, value = Kind.WRITE, version[k]
            if fate < unknown:
                if rng.random() < 0.5:  # a timeout, not a quick 5xx
                    duration = rng.uniform(0.2, 1.0)
                outcome, applied = Outcome.UNKNOWN, rng.random() < 0.5
            else:
                outcome = Outcome.FAIL if fate < unknown + refused else Outcome.OK
                applied = outcome is Outcome.OK
        else:
            kind, k = Kind.READ, rng.randrange(keys)
            outcome = Outcome.FAIL if fate < failed_reads else Outcome.OK
            applied = outcome is Outcome.OK
        end = round(start + duration, 6)  # as a file keeps it: the order of times is kept too
        made.append(Op(len(made), c, kind, names[k], value, start, end, outcome))
        took_effect.append(rng.uniform(start, end) if applied else None)
        # a client's next operation begins strictly after its last ended
        heapq.heappush(clients, (round(end + rng.uniform(0.0001, 0.005), 6), c))
    # Replay what took effect in the order it did: each read returns what its key held.
    held: dict[int, int | None] = {}
    for _, i in sorted((at, i) for i, at in enumerate(took_effect) if at is not None):
        op = made[i]
        if op.kind is Kind.WRITE:
            held[op.key] = op.value
        else:
            made[i] = dataclasses.replace(op, value=held.get(op.key))
    made.sort(key=lambda op: op.start)
    if stale is not None:
        _make_stale(made, made[int(stale * (len(made) - 1))].start)
    history = History()
    history.extend(made)
    return history


def _make_stale(made: list[Op], after: float) -> None:
    """The first acknowledged read begun after ``after`` that can be made stale now returns
    the value of an acknowledged write that ended before another acknowledged write began,
    which ended before the read began (values are unique: no later write brings it back)."""
    for i, read in enumerate(made):
        if read.start < after or read.kind is not Kind.READ or read.outcome is not Outcome.OK:
            continue
        acked = sorted((op for op in made if op.kind is Kind.WRITE and op.key == read.key
                        and op.outcome is Outcome.OK), key=lambda op: op.end)
        newer = [op for op in acked if op.end < read.start]
        older = [op for op in acked if newer and op.end < newer[-1].start]
        if older:
            made[i] = dataclasses.replace(read, value=older[-1].value)
            return
    raise ValueError("no read to make stale after that point")
