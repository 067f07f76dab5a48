"""Is a register's history linearizable? A Wing-Gong search with Lowe's memoization, as
Knossos and Porcupine do it, for one key (a key-value history is linearizable if and only if
each key's is: P-compositionality, so every key is checked alone).

A history is linearizable if its operations can be put in one order that (1) keeps every
operation that ended before another began before it, and (2) is a legal run of a register:
each read returns the last value written before it. An acknowledged operation must be in the
order; an ``unknown`` write may be placed anywhere after it began, or left out (it may never
have taken effect); a refused (``fail``) operation is no operation at all.

The search goes depth first over (operations placed so far, the register's value); a state
seen before is not searched again. When no order exists, the deepest state reached names
the operations that could not come next: that is what ``NotLinearizable`` shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .history import Kind, Op, Outcome

__all__ = ["Linearizable", "NotLinearizable", "Undecided", "Verdict", "check_register"]


@dataclass(frozen=True)
class Linearizable:
    key: int
    states: int  # searched


@dataclass(frozen=True)
class NotLinearizable:
    key: int
    placed: int  # acknowledged operations placed in the longest legal order found
    of: int
    value: int | None  # the register's value there
    written_by: Op | None
    stuck: tuple[Op, ...]  # acknowledged operations, one of which had to come next: none could
    states: int

    def short(self) -> str:
        """One line: the first operation that could not come next, against what was held."""
        held = "nothing" if self.value is None else self.value
        op = min(self.stuck, key=lambda o: o.end) if self.stuck else None
        if op is None:
            return f"key {self.key}: no legal order"
        seen = "nothing" if op.value is None else op.value
        verb = "read" if op.kind is Kind.READ else "wrote"
        return (f"key {self.key}: client {op.process} {verb} {seen} at {op.start:.2f}-"
                f"{op.end:.2f} s, when the register already held {held}")

    def explain(self) -> str:
        by = f" (written by {self.written_by.describe()})" if self.written_by else " (initial)"
        held = "nothing" if self.value is None else self.value
        lines = [f"key {self.key}: after {self.placed} of {self.of} acknowledged operations "
                 f"in a legal order, the register held {held}{by}; none of these could come "
                 "next:"]
        lines += [f"  {op.describe()}" for op in self.stuck]
        return "\n".join(lines)


@dataclass(frozen=True)
class Undecided:
    key: int
    states: int  # the budget, spent


Verdict = Linearizable | NotLinearizable | Undecided


def relevant(ops: Iterable[Op]) -> list[Op]:
    """What the search weighs: register writes not refused, reads that answered."""
    return sorted((op for op in ops
                   if (op.kind is Kind.WRITE and op.outcome is not Outcome.FAIL)
                   or (op.kind is Kind.READ and op.outcome is Outcome.OK)),
                  key=lambda op: (op.start, op.returned))


def check_register(key: int, ops: Sequence[Op], initial: int | None = None,
                   budget: int = 500_000) -> Verdict:
    """Search an order for one key's operations (any order of ``ops``; refused ones and
    reads without an answer are ignored). ``budget``: states to search before giving up."""
    ops = relevant(ops)
    n = len(ops)
    starts = [op.start for op in ops]
    returns = [op.returned for op in ops]
    must = sum(1 << i for i, op in enumerate(ops) if op.outcome is Outcome.OK)
    total = bin(must).count("1")
    seen: set[tuple[int, int | None]] = set()
    stack: list[tuple[int, int | None, int | None]] = [(0, initial, None)]  # mask, value, by
    best: tuple[int, int, int | None, int | None] = (-1, 0, initial, None)
    while stack:
        mask, value, by = stack.pop()
        if (mask, value) in seen:
            continue
        seen.add((mask, value))
        placed = bin(mask & must).count("1")
        if placed == total:
            return Linearizable(key, len(seen))
        if placed > best[0]:
            best = (placed, mask, value, by)
        if len(seen) >= budget:
            return Undecided(key, len(seen))
        # Least preferred pushed first (the stack pops the last): unknown writes, then
        # acknowledged writes, then reads of the value held now.
        unknown, writes, reads = [], [], []
        for i in _candidates(mask, starts, returns, n):
            op = ops[i]
            if op.kind is Kind.READ:
                if op.value == value:
                    reads.append(i)
            elif op.outcome is Outcome.UNKNOWN:
                unknown.append(i)
            else:
                writes.append(i)
        for i in unknown + sorted(writes, key=lambda j: -returns[j]):
            stack.append((mask | 1 << i, ops[i].value, i))
        for i in reads:
            stack.append((mask | 1 << i, value, by))
    placed, mask, value, by = best
    stuck = tuple(ops[i] for i in _candidates(mask, starts, returns, n)
                  if ops[i].outcome is Outcome.OK)
    return NotLinearizable(key, placed, total, value, None if by is None else ops[by], stuck,
                           len(seen))


def _candidates(mask: int, starts: list[float], returns: list[float], n: int) -> list[int]:
    """The operations that may be placed next: not placed yet, and begun before every other
    unplaced operation ended (ops are sorted by start, so the scan stops early)."""
    first = (~mask & (mask + 1)).bit_length() - 1  # lowest unplaced
    frontier = float("inf")
    scanned: list[int] = []
    for i in range(first, n):
        if starts[i] > frontier:
            break
        if not mask >> i & 1:
            scanned.append(i)
            frontier = min(frontier, returns[i])
    return [i for i in scanned if starts[i] <= frontier]
