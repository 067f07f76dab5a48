"""A history: every operation a client sent, with when it began and ended and what came of it.

An outcome is ``ok`` (acknowledged), ``fail`` (refused: it certainly did not take effect, a 4xx)
or ``unknown`` (a timeout, a dropped connection or a 5xx: it may or may not have taken effect,
now or later). Jepsen calls the last one ``info``. Times are seconds on one monotonic clock.

Pure: a history as a file is ``historyfile.py``; a made-up one, ``synthetic.py``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["History", "Kind", "Op", "Outcome", "outcome_of"]


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
