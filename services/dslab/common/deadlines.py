"""Timeouts with no timer per request: each thing that can time out keeps a deadline (a float
it moves as it goes), and one ``Sweep`` per owner checks them every ``every`` seconds while
there is something to check. Arming and cancelling an asyncio timer per request showed on the
hot path (``front.py``'s edge timeouts, ``keeper/upstream.py``'s upstream timeout); a deadline
is now acted on at most ``every`` seconds late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Sweep", "sweep_interval"]


def sweep_interval(shortest_timeout: float) -> float:
    """A quarter of the shortest timeout, at most a second: how late a deadline may act."""
    return min(1.0, shortest_timeout / 4)


class Sweep:
    """``check(now)`` every ``every`` seconds from ``start()`` on, for as long as ``busy()``."""

    def __init__(self, every: float, check: Callable[[float], None],
                 busy: Callable[[], bool]) -> None:
        self.every = every
        self._check = check
        self._busy = busy
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Make sure a sweep is coming (cheap when one is)."""
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.every, self._run)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self) -> None:
        self._handle = None
        self._check(asyncio.get_running_loop().time())
        if self._busy():
            self.start()
