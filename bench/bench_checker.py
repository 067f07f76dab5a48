"""Benchmark: the linearizability checker on histories like A-5's (``synthetic.synthetic``: one
writer per key issuing versions 1, 2, 3..., several readers, a share of the writes unknown),
seeded, linearizable ones and ones with one stale read injected (half way through the
operations and near their end: the search must rule out every order of what came before it).

Prints, per case, the time for the whole history and the slowest key's verdict, the states
searched and the verdicts. The target: 20 000 operations over 8 keys, 15% of the writes
unknown, each verdict within a minute on two cores (the check uses one).

    .venv/bin/python bench/bench_checker.py [--ops 20000] [--keys 8] [--seeds 3]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from dslab.faults.linearizable import check_register, register_ops
from dslab.faults.synthetic import synthetic


def run(ops: int, keys: int, unknown: float, stale: float | None, seed: int,
        readers: int, writers: int = 1) -> str:
    history = synthetic(keys=keys, ops=ops, readers=readers, unknown=unknown, stale=stale,
                        seed=seed, writers=writers)
    verdicts: Counter[str] = Counter()
    slowest = states = 0.0
    began = time.perf_counter()
    for key, key_ops in register_ops(history).items():
        t = time.perf_counter()
        verdict = check_register(key, key_ops)
        slowest = max(slowest, time.perf_counter() - t)
        states = max(states, verdict.states)
        verdicts[type(verdict).__name__] += 1
    took = time.perf_counter() - began
    injected = "linearizable" if stale is None else f"stale read at {stale:.0%}"
    return (f"{ops:>6} ops {keys:>2} keys {readers:>2}r {writers}w {unknown:>4.0%} unknown  "
            f"{injected:<21} seed {seed}: "
            f"{took:6.2f} s  (slowest key {slowest:5.2f} s, at most {states:>7.0f} states)  "
            + ", ".join(f"{n} {name}" for name, n in sorted(verdicts.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=8)
    parser.add_argument("--readers", type=int, default=6)
    parser.add_argument("--unknown", type=float, default=0.15)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print("the large history:")
    for seed in range(args.seeds):
        for stale in (None, 0.5, 0.95):
            print(run(args.ops, args.keys, args.unknown, stale, seed, args.readers), flush=True)
    print("histories of 600 ops, one key, two readers:")
    for unknown in (0.05, 0.1, 0.2):
        for stale in (None, 0.5, 0.95):
            print(run(600, 1, unknown, stale, 0, 2), flush=True)
    print("harder than A-5's: more readers, or several writers per key (concurrent writes):")
    for readers, writers in ((32, 1), (6, 2), (6, 3)):
        for stale in (None, 0.95):
            print(run(args.ops, args.keys, args.unknown, stale, 0, readers, writers), flush=True)


if __name__ == "__main__":
    main()
