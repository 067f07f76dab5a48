"""Check a recorded history file, every register key of it:

    python -m dslab.faults.check FILE [--budget SECONDS] [--states N]

FILE holds JSON lines, one operation a line (see ``history.py``). Exit status: 0 every key is
linearizable; 1 one is not (its key and the operations that show it are printed; this wins
over an undecided key: an anomaly found is certain); 2 one stays undecided within the budget,
or the file cannot be read.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence

from .historyfile import HistoryFileError, read_history
from .linearizable import Linearizable, NotLinearizable, Undecided, check_keys

__all__ = ["main"]

EACH_KEY_UP_TO = 20  # more keys than this: a summary, and only the keys not linearizable


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dslab.faults.check",
                                     description="Is each register of a history linearizable?")
    parser.add_argument("file", help="the history: JSON lines, one operation a line")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="wall-clock time for the whole search (default: no limit)")
    parser.add_argument("--states", type=int, default=500_000, metavar="N",
                        help="states to search per key before giving up (default 500000)")
    args = parser.parse_args(argv)
    try:
        history = read_history(args.file)
    except (OSError, HistoryFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    began = time.monotonic()
    deadline = began + args.budget if args.budget is not None else math.inf
    verdicts = check_keys(history, budget=args.states,
                          out_of_time=lambda: time.monotonic() > deadline)
    took = time.monotonic() - began
    for key, verdict in verdicts.items():
        if isinstance(verdict, NotLinearizable):
            print(f"key {key}: NOT linearizable ({verdict.states} states searched)\n"
                  f"  {verdict.short()}\n{verdict.explain()}")
        elif isinstance(verdict, Undecided):
            budget = "time" if verdict.spent == "seconds" else "state"
            print(f"key {key}: undecided: the {budget} budget ran out after "
                  f"{verdict.states} states")
        elif len(verdicts) <= EACH_KEY_UP_TO:
            print(f"key {key}: linearizable ({verdict.states} states searched)")
    counts = Counter(type(v) for v in verdicts.values())
    print(f"{len(verdicts)} register keys, {len(history)} operations, {took:.2f} s: "
          f"{counts[Linearizable]} linearizable, {counts[NotLinearizable]} not, "
          f"{counts[Undecided]} undecided")
    if counts[NotLinearizable]:
        return 1
    return 2 if counts[Undecided] else 0


if __name__ == "__main__":
    sys.exit(main())
