"""Progress of long experiments on the terminal that runs them, never in a notebook's output.

A kernel's ``sys.__stderr__`` is the stderr it inherited from papermill: the terminal of
``make report`` (in a script or under pytest, the process's own stderr). Everything here
writes there, so a rendered report carries no progress at all:

- ``bar``: a tqdm bar per batch of requests, shown only where that stream is a terminal (a
  log or CI gets no carriage-return noise);
- ``RunProgress``: a line per run a long function finishes: which, how many of how many, the
  rate of that run, the time so far and an estimate of the time left.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm.std import tqdm

__all__ = ["RunProgress", "bar"]


def terminal() -> TextIO | None:
    """The stream progress goes to: the process's original stderr (the kernel's: papermill's)."""
    return sys.__stderr__


def bar(total: int, desc: str) -> tqdm[Any]:
    """A bar on the terminal (``leave=False``: it clears when done); a no-op bar where that
    stream is no terminal. Never the notebook's own stderr, which would land in the report."""
    stream = terminal()
    return tqdm(total=total, desc=desc, leave=False, file=stream,
                disable=stream is None or not stream.isatty())


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
        stream = self.stream or terminal()
        if stream is not None:
            tqdm.write(line, file=stream)  # above any bar that is showing
            stream.flush()
        return line
