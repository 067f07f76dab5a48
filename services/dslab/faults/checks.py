"""The checks of a run, on its history and on what the database held afterwards (pure).

    lost        acknowledged inserts missing afterwards
    refused     refused inserts (a 4xx: they did not happen) whose row is held all the same
    vanished    rows an earlier read-back saw that a later one did not (nothing deletes)
    phantoms    rows held that no client tried to write
    altered     rows held with a value no client wrote for them
    anomalies   register keys whose history is not linearizable, with the operations
    undecided   register keys the search gave up on within its budget: not passed
    per_second  ok / fail / unknown operations per second of the run, for the timeline

A read-back is every row the database held at a time after the run; several (after the
faults, after a power loss) are checked together: each register's values as more reads of
its history, in their order, so a value seen once must stay unless the history allows it to
change; each row as one that, once seen, must stay.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .history import History, Kind, Op, Outcome
from .linearizable import Linearizable, NotLinearizable, Undecided, Verdict, check_register

__all__ = ["ReadBack", "Report", "check", "per_second", "registers"]


@dataclass
class Report:
    lost: list[Op] = field(default_factory=list)
    refused: list[Op] = field(default_factory=list)
    vanished: list[int] = field(default_factory=list)
    phantoms: list[int] = field(default_factory=list)
    altered: list[tuple[int, int | None]] = field(default_factory=list)  # (key, value held)
    anomalies: list[NotLinearizable] = field(default_factory=list)
    undecided: list[Undecided] = field(default_factory=list)
    registers_checked: int = 0

    @property
    def valid(self) -> bool:
        return not (self.lost or self.refused or self.vanished or self.phantoms
                    or self.altered or self.anomalies or self.undecided)

    def explain(self, most: int = 5) -> str:
        if self.valid:
            return f"valid: nothing lost, nothing phantom, {self.registers_checked} registers linearizable"
        parts = []
        if self.lost:
            parts.append(f"{len(self.lost)} acknowledged inserts lost, e.g. "
                         + "; ".join(op.describe() for op in self.lost[:most]))
        if self.refused:
            parts.append(f"{len(self.refused)} refused inserts held all the same, e.g. "
                         + "; ".join(op.describe() for op in self.refused[:most]))
        if self.vanished:
            parts.append(f"{len(self.vanished)} rows seen by an earlier read-back and gone "
                         f"from a later one: {self.vanished[:most]}")
        if self.phantoms:
            parts.append(f"{len(self.phantoms)} rows nobody wrote: {self.phantoms[:most]}")
        if self.altered:
            parts.append(f"{len(self.altered)} rows with values nobody wrote: {self.altered[:most]}")
        parts += [a.explain() for a in self.anomalies[:most]]
        if self.undecided:
            parts.append(f"{len(self.undecided)} registers undecided within the search budget")
        return "\n".join(parts)


ReadBack = tuple[float, Mapping[int, int | None]]  # when, and every row held then


def registers(ops: Iterable[Op], final: Mapping[int, int | None] | None = None,
              after: float = math.inf, budget: int = 500_000,
              earlier: Sequence[ReadBack] = ()) -> dict[int, Verdict]:
    """Each register key's verdict. ``final``: what each key held after the run (read at
    ``after``, later than every operation), checked as one more read; ``earlier``: read-backs
    before it, each one more read at its time."""
    by_key: dict[int, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind in (Kind.WRITE, Kind.READ):
            by_key[op.key].append(op)
    if final is not None:
        last = max((op.end for key in by_key for op in by_key[key]), default=0.0)
        t = after if math.isfinite(after) else 1 + max([last, *(t for t, _ in earlier)])
        for n, (when, held) in enumerate([*earlier, (t, final)]):
            for key in by_key:
                by_key[key].append(Op(-1 - n, -1, Kind.READ, key, held.get(key), when, when,
                                      Outcome.OK, f"read-back {n + 1} after the run"))
    return {key: check_register(key, key_ops, budget=budget) for key, key_ops in by_key.items()}


def check(history: History, held: Mapping[int, int] | None = None,
          after: float = math.inf, budget: int = 500_000,
          before: Mapping[int, int] | None = None,
          earlier: Sequence[ReadBack] = ()) -> Report:
    """The checks of a run. ``held``: every row the database held after it, Stud_id -> value
    (None: not read back, so only linearizability is checked), read back at ``after``;
    ``earlier``: read-backs before that one (after the faults, before a power loss), each
    (when, rows); ``before``: the rows it held when the run began (none of the run's keys:
    the client picks keys not held)."""
    report = Report()
    register_keys = {op.key for op in history if op.kind is Kind.WRITE}
    final = None if held is None else {k: held.get(k) for k in register_keys}
    for verdict in registers(history, final, after, budget, earlier).values():
        report.registers_checked += 1
        if isinstance(verdict, NotLinearizable):
            report.anomalies.append(verdict)
        elif isinstance(verdict, Undecided):
            report.undecided.append(verdict)
        else:
            assert isinstance(verdict, Linearizable)
    if held is None:
        return report
    written: dict[int, set[int | None]] = defaultdict(set)
    for key, value in (before or {}).items():
        written[key].add(value)
    for op in history:
        if op.kind in (Kind.INSERT, Kind.WRITE):
            written[op.key].add(op.value)
    for op in history:
        if op.kind is Kind.INSERT and op.outcome is Outcome.OK and op.key not in held:
            report.lost.append(op)
        if op.kind is Kind.INSERT and op.outcome is Outcome.FAIL and op.key in held:
            report.refused.append(op)
    seen = set().union(*(rows.keys() for _, rows in earlier)) - set(before or {})
    report.vanished = sorted(seen - held.keys())
    for key, value in sorted(held.items()):
        if key not in written:
            report.phantoms.append(key)
        elif value not in written[key]:
            report.altered.append((key, value))
    return report


def per_second(ops: Iterable[Op], start: float = 0.0) -> dict[int, Counter[str]]:
    """{second of the run: {outcome: operations that ended in it}}, the timeline of a run."""
    seconds: dict[int, Counter[str]] = defaultdict(Counter)
    for op in ops:
        seconds[int(op.end - start)][op.outcome.value] += 1
    return dict(sorted(seconds.items()))
