"""Is a register's history linearizable? A Wing-Gong search with Lowe's memoization, as
Knossos and Porcupine do it, for one key (a key-value history is linearizable if and only if
each key's is: P-compositionality, so every key is checked alone).

A history is linearizable if its operations can be put in one order that (1) keeps every
operation that ended before another began before it, and (2) is a legal run of a register:
each read returns the last value written before it. An acknowledged operation must be in the
order; an ``unknown`` write may be placed anywhere after it began, or left out (it may never
have taken effect); a refused (``fail``) operation is no operation at all.

The search goes depth first over (operations placed so far, the register's value); a state
seen before is not searched again. Three reductions keep it near linear on the histories a
run records, each exact (none changes a verdict):

- an unknown write whose value no read returned is dropped before the search: in any legal
  order, taking it out leaves every read's value as it was (no read sees its value, so the
  next operation after it that a read can tell apart is a write);
- in the search, an unknown write is placed only while some unplaced read still returns its
  value (the same argument, state by state);
- a read of the value held now, when it may come next, is placed next and nothing else is
  tried there: moving a read earlier, to a point where the register holds what it returned
  and every operation that had to precede it is placed, keeps any legal order legal.

The operations not placed yet are a doubly linked list of call and return events in time
order (Porcupine's "lift" and "unlift"): the operations that may come next are the calls
before the first return, found without scanning what was placed.

When no order exists, the deepest state reached names the operations that could not come
next, and the operation that fixed the register's value there: that is what
``NotLinearizable`` shows.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .history import Kind, Op, Outcome

__all__ = ["Linearizable", "NotLinearizable", "Undecided", "Verdict", "check_keys",
           "check_register", "prune", "register_ops"]


Stop = Callable[[], bool]  # asked now and then: has the caller's wall-clock budget run out?


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
    # What fixed the value ``stuck_op`` went against: in the order found, the op that last
    # showed what the register held (a read that returned it, else the write of it) of those
    # that ended before ``stuck_op`` began, so the anomaly is visible on its face; when there
    # is none, ``written_by`` (None: the initial value).
    fixed_by: Op | None = None

    @property
    def stuck_op(self) -> Op | None:
        """The stuck operation the explanation is about: see ``_stuck_op``."""
        return _stuck_op(self.stuck, self.value)

    def short(self) -> str:
        """One line: the first operation that could not come next, against what fixed the
        value the register held."""
        op = self.stuck_op
        if op is None:
            return f"key {self.key}: no legal order"
        seen = _value(op.value)
        verb = "read" if op.kind is Kind.READ else "wrote"
        line = f"key {self.key}: client {op.process} {verb} {seen} at {op.start:.2f}-{op.end:.2f} s"
        by = self.fixed_by
        if by is None:
            return f"{line}, when the register already held {_value(self.value)}"
        # The evidence: an op that showed the value held, before the stuck op began if it can.
        by_verb = "read" if by.kind is Kind.READ else "wrote"
        return (f"{line}, when the register already held {_value(by.value)}: client "
                f"{by.process} {by_verb} {_value(by.value)} at {by.start:.2f}-{by.end:.2f} s")

    def explain(self) -> str:
        by = f" (written by {self.written_by.describe()})" if self.written_by else " (initial)"
        lines = [f"key {self.key}: after {self.placed} of {self.of} acknowledged operations "
                 f"in a legal order, the register held {_value(self.value)}{by}; none of these could come "
                 "next:"]
        lines += [f"  {op.describe()}" for op in self.stuck]
        op = self.stuck_op
        fixed = self.fixed_by
        if fixed is not None and op is not None and fixed.returned < op.start:
            lines.append(f"before #{op.id} began, the register held {_value(fixed.value)} in "
                         f"that order, as this showed:\n  {fixed.describe()}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Undecided:
    key: int
    states: int  # searched before giving up
    spent: str = "states"  # the budget that ran out: "states" or "seconds"


Verdict = Linearizable | NotLinearizable | Undecided


def relevant(ops: Iterable[Op]) -> list[Op]:
    """What the search weighs: register writes not refused, reads that answered."""
    return sorted((op for op in ops
                   if (op.kind is Kind.WRITE and op.outcome is not Outcome.FAIL)
                   or (op.kind is Kind.READ and op.outcome is Outcome.OK)),
                  key=lambda op: (op.start, op.returned))


def prune(ops: Iterable[Op]) -> list[Op]:
    """``ops`` without the unknown writes whose value no acknowledged read returned: such a
    write is never needed (see the module's docstring). A value some read returned keeps
    every write of it."""
    ops = list(ops)
    read = {op.value for op in ops if op.kind is Kind.READ and op.outcome is Outcome.OK}
    return [op for op in ops if not (op.kind is Kind.WRITE and op.outcome is Outcome.UNKNOWN
                                     and op.value not in read)]


def check_register(key: int, ops: Sequence[Op], initial: int | None = None,
                   budget: int = 500_000, *, out_of_time: Stop | None = None) -> Verdict:
    """Search an order for one key's operations (any order of ``ops``; refused ones and
    reads without an answer are ignored). ``budget``: states to search before giving up;
    ``out_of_time``: asked now and then whether to give up (a wall-clock budget, kept by the
    caller so that the search reads no clock; a verdict that depends on the machine's speed,
    so the tests use ``budget``)."""
    return _Search(key, prune(relevant(ops)), initial).run(budget, out_of_time or _never)


def register_ops(ops: Iterable[Op]) -> dict[int, list[Op]]:
    """Each register's operations, by key: the keys read or written. An insert of such a key
    counts as its first write (POST /write makes the row a register's first version); keys
    only inserted are sets, not registers, and are left out."""
    by_key: dict[int, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    return {key: [dataclasses.replace(op, kind=Kind.WRITE) if op.kind is Kind.INSERT else op
                  for op in key_ops]
            for key, key_ops in sorted(by_key.items())
            if any(op.kind is not Kind.INSERT for op in key_ops)}


def check_keys(ops: Iterable[Op], budget: int = 500_000, out_of_time: Stop | None = None
               ) -> dict[int, Verdict]:
    """Every register's verdict (``register_ops``), by key. ``budget``: states per key;
    ``out_of_time``: one wall-clock budget for all of them (a key reached after it ran out is
    ``Undecided`` with no state searched)."""
    stop = out_of_time or _never
    verdicts: dict[int, Verdict] = {}
    for key, key_ops in register_ops(ops).items():
        verdicts[key] = (Undecided(key, 0, "seconds") if stop()
                         else check_register(key, key_ops, budget=budget, out_of_time=stop))
    return verdicts


def _never() -> bool:
    return False


def _value(value: int | None) -> str:
    return "nothing" if value is None else str(value)


def _stuck_op(stuck: Sequence[Op], value: int | None) -> Op | None:
    """The stuck operation that shows the anomaly best: the first to end of the reads that
    could not come next because they returned a value not held (illegal on their face); else
    the first to end of them all."""
    illegal = [op for op in stuck if op.kind is Kind.READ and op.value != value]
    return min(illegal or stuck, key=lambda o: (o.end, o.start), default=None)


class _Search:
    """One key's search. Ops are numbered by start; op ``i``'s call event is node ``i`` and
    its return event node ``n + i`` of a linked list kept in time order (a call before a
    return at the same instant: operations that touch are concurrent)."""

    def __init__(self, key: int, ops: list[Op], initial: int | None) -> None:
        self.key, self.ops, self.initial = key, ops, initial
        n = self.n = len(ops)
        self.reads = [op.kind is Kind.READ for op in ops]
        self.unknown = [op.outcome is Outcome.UNKNOWN for op in ops]
        self.values = [op.value for op in ops]
        self.returns = [op.returned for op in ops]
        self.bits = [1 << i for i in range(n)]
        events = sorted([(op.start, 0, i) for i, op in enumerate(ops)]
                        + [(op.returned, 1, n + i) for i, op in enumerate(ops)])
        head = self.head = 2 * n
        order = [head] + [node for _, _, node in events]
        self.next = [-1] * (2 * n + 1)
        self.prev = [-1] * (2 * n + 1)
        for a, b in zip(order, order[1:]):
            self.next[a], self.prev[b] = b, a
        # Unplaced acknowledged reads of each value: an unknown write is worth placing only
        # while one remains.
        self.unread = Counter(v for v, r in zip(self.values, self.reads) if r)
        self.total = sum(1 for op in ops if op.outcome is Outcome.OK)

    def _lift(self, i: int) -> None:
        nxt, prv = self.next, self.prev
        for node in (i, self.n + i):
            nxt[prv[node]] = nxt[node]
            if nxt[node] != -1:
                prv[nxt[node]] = prv[node]

    def _unlift(self, i: int) -> None:
        nxt, prv = self.next, self.prev
        for node in (self.n + i, i):  # the reverse of _lift's order: dancing links
            nxt[prv[node]] = node
            if nxt[node] != -1:
                prv[nxt[node]] = node

    def _choices(self, value: int | None) -> list[int]:
        """The ops worth placing next, the one to try first last (a stack): a legal read
        alone if there is one; else unknown writes someone reads, then acknowledged writes,
        the first to return tried first."""
        n, nxt, reads, values = self.n, self.next, self.reads, self.values
        unknown: list[int] = []
        writes: list[int] = []
        node = nxt[self.head]
        while node != -1 and node < n:  # calls before the first return
            if reads[node]:
                if values[node] == value:
                    return [node]
            elif self.unknown[node]:
                if self.unread[values[node]] > 0:
                    unknown.append(node)
            else:
                writes.append(node)
            node = nxt[node]
        writes.sort(key=lambda j: -self.returns[j])
        return unknown + writes

    def run(self, budget: int, out_of_time: Stop) -> Verdict:
        if self.total == 0:
            return Linearizable(self.key, 1)
        ok = [op.outcome is Outcome.OK for op in self.ops]
        seen: set[tuple[int, int | None]] = {(0, self.initial)}
        # The path: per depth, the state and the choices left there; ``placed`` the ops.
        masks, values, bys = [0], [self.initial], [-1]
        options = [self._choices(self.initial)]
        placed: list[int] = []
        done = 0  # acknowledged ops placed
        # The deepest legal order found: acknowledged ops in it, its ops, value and writer.
        best: tuple[int, list[int], int | None, int] = (0, [], self.initial, -1)
        while options:
            if not options[-1]:  # every choice here failed: back up one op
                for stack in (options, masks, values, bys):
                    stack.pop()
                if placed:
                    i = placed.pop()
                    self._unlift(i)
                    done -= ok[i]
                    if self.reads[i]:
                        self.unread[self.values[i]] += 1
                continue
            i = options[-1].pop()
            mask = masks[-1] | self.bits[i]
            value = values[-1] if self.reads[i] else self.values[i]
            if (mask, value) in seen:
                continue
            seen.add((mask, value))
            self._lift(i)
            placed.append(i)
            done += ok[i]
            if self.reads[i]:
                self.unread[value] -= 1
            by = bys[-1] if self.reads[i] else i
            if done == self.total:
                return Linearizable(self.key, len(seen))
            if done > best[0]:
                best = (done, placed.copy(), value, by)
            if len(seen) >= budget:
                return Undecided(self.key, len(seen))
            if not len(seen) & 1023 and out_of_time():
                return Undecided(self.key, len(seen), "seconds")
            masks.append(mask)
            values.append(value)
            bys.append(by)
            options.append(self._choices(value))
        return self._not_linearizable(best, len(seen))

    def _not_linearizable(self, best: tuple[int, list[int], int | None, int], states: int
                          ) -> NotLinearizable:
        done, path, value, by = best
        ops = self.ops
        mask = sum(self.bits[i] for i in path)
        stuck = tuple(ops[i] for i in _candidates(mask, ops) if ops[i].outcome is Outcome.OK)
        written_by = None if by == -1 else ops[by]
        op = _stuck_op(stuck, value)
        fixed_by = None if op is None else _fixed_by(op, [ops[i] for i in path], self.initial)
        return NotLinearizable(self.key, done, self.total, value, written_by, stuck, states,
                               written_by if fixed_by is None else fixed_by)


def _fixed_by(stuck: Op, order: list[Op], initial: int | None) -> Op | None:
    """In a legal ``order`` that ``stuck`` could not extend: the last op, of those that
    showed what the register held after every op that ended before ``stuck`` began, to end
    before it began (None: no such op, or the register held there what ``stuck`` returned,
    so the order alone does not show the anomaly)."""
    before = [n for n, o in enumerate(order) if o.returned < stuck.start]
    if not before:
        return None
    prefix = order[:before[-1] + 1]  # a prefix of a legal order is one
    writes = [n for n, o in enumerate(prefix) if o.kind is not Kind.READ]
    held = prefix[writes[-1]].value if writes else initial
    if stuck.kind is Kind.READ and stuck.value == held:
        return None
    shown = prefix[writes[-1]:] if writes else prefix
    return max((o for o in shown if o.returned < stuck.start), key=lambda o: (o.end, o.start),
               default=None)


def _candidates(mask: int, ops: Sequence[Op]) -> list[int]:
    """The operations that may be placed next: not placed yet, and begun before every other
    unplaced operation ended (ops are sorted by start)."""
    unplaced = [i for i in range(len(ops)) if not mask >> i & 1]
    frontier = min((ops[i].returned for i in unplaced), default=math.inf)
    return [i for i in unplaced if ops[i].start <= frontier]
