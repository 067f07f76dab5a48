"""Progress of long experiments on the terminal that runs them, one line per run.

A notebook's bars (tqdm) show in the notebook; ``make report`` runs notebooks headless, where
nobody sees them. A kernel's ``sys.__stderr__`` is the stderr it inherited from papermill: the
terminal of ``make report`` (in a script or under pytest, the process's own stderr). So a long
library function reports each run it finishes there: which, how many of how many, the rate
of that run, the time so far and an estimate of the time left for the function.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["RunProgress"]


class RunProgress:
    def __init__(self, what: str, runs: int, unit: str = "requests",
                 stream: TextIO | None = None) -> None:
        self.what = what
        self.runs = runs
        self.unit = unit
        self.stream = stream
        self.finished = 0
        self.started = time.monotonic()

    def done(self, items: float, seconds: float, note: str = "", unit: str | None = None) -> str:
        """One run finished: ``items`` handled in ``seconds``. Returns the line it printed."""
        self.finished += 1
        elapsed = time.monotonic() - self.started
        left = elapsed / self.finished * (self.runs - self.finished)
        rate = items / seconds if seconds > 0 else float("nan")
        line = (f"    {self.what}: run {self.finished}/{self.runs}"
                f"{f' ({note})' if note else ''}: {rate:,.0f} {unit or self.unit}/s; "
                f"{elapsed:.0f} s so far, ~{left:.0f} s left")
        stream = self.stream or sys.__stderr__
        if stream is not None:
            print(line, file=stream, flush=True)
        return line
