"""What a write sent to every replica of a shard did, and who must leave: pure, no I/O.

Liveness is decided by the transport and the heartbeats, never by what a request carried:

* a replica that could not be reached (or dropped the connection) is *unreachable*: evicted;
* a replica that answered with an error *refused*. If others applied the same write, it is out
  of step with them and is evicted too; if every replica refused, the request is at fault (or
  the shard is in trouble as a whole): nobody is evicted and the refusal is the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..common.errors import ApiError, Unavailable

__all__ = ["FanOut", "ServerRefused", "classify"]


class ServerRefused(ApiError):
    """A shard server answered, but not with a 200; ``status`` and ``message`` are its own."""

    def __init__(self, name: str, status: int, message: str) -> None:
        super().__init__(message or f"<Error> {name} answered {status}", status)
        self.name = name


@dataclass
class FanOut:
    applied: list[str] = field(default_factory=list)
    refused: list[ServerRefused] = field(default_factory=list)
    unreachable: list[tuple[str, BaseException]] = field(default_factory=list)

    def to_evict(self) -> list[tuple[str, str]]:
        """(name, why) of every replica that must leave the shard's ring."""
        gone = [(name, f"unreachable: {exc}") for name, exc in self.unreachable]
        if self.applied:
            gone += [(r.name, f"out of step, refused what others applied: {r.message}")
                     for r in self.refused]
        return gone

    def refusal(self) -> ApiError | None:
        """The answer when no replica applied the write and at least one refused it: its own
        4xx, or a 503 for anything else."""
        if self.applied or not self.refused:
            return None
        first = min(self.refused, key=lambda r: r.status)
        if 400 <= first.status < 500:
            return ApiError(first.message, first.status)
        return Unavailable(first.message)


def classify(names: Sequence[str], results: Sequence[object],
             unreachable: tuple[type[BaseException], ...]) -> FanOut:
    """Sort ``results`` (one per name: an answer or the exception it raised). An exception that
    is neither a refusal nor ``unreachable`` is a bug and is raised."""
    out = FanOut()
    for name, result in zip(names, results):
        if isinstance(result, ServerRefused):
            out.refused.append(result)
        elif isinstance(result, unreachable):
            out.unreachable.append((name, result))
        elif isinstance(result, BaseException):
            raise result
        else:
            out.applied.append(name)
    return out
