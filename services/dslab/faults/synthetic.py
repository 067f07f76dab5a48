"""A made-up history of atomic registers, like A-5's (one writer per key issuing versions 1,
2, 3..., several readers, some writes unknown or refused, some reads failed), with a stale
read injected on request: for the checker's tests and ``bench/bench_checker.py``.
"""

from __future__ import annotations

import dataclasses
import heapq
import random

from .history import History, Kind, Op, Outcome

__all__ = ["synthetic"]


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
