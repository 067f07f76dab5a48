"""Pick a replica for a request and fail over along the ring: decision logic, I/O injected.

``route`` asks the ring for the request's owner and calls ``fetch(name)``; when that raises an
``UpstreamError`` it reports the failure and tries the next distinct server clockwise, so a
client does not see a replica die. It never retries on an answer: a replica's 500 is its
answer, passed through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from ..ring import HashRing
from .errors import UpstreamError

__all__ = ["NoReplicaAvailable", "route"]

T = TypeVar("T")


class NoReplicaAvailable(Exception):
    """Every replica on the ring failed (or the ring is empty)."""

    def __init__(self, failures: list[tuple[str, Exception]]) -> None:
        self.failures = failures
        detail = "; ".join(f"{name}: {exc}" for name, exc in failures) or "no replica on the ring"
        super().__init__(detail)


async def route(
    request_id: int,
    ring: HashRing,
    fetch: Callable[[str], Awaitable[T]],
    on_failure: Callable[[str, Exception], None] = lambda name, exc: None,
    max_attempts: int = 3,
    order: Iterable[str] | None = None,
) -> tuple[str, T]:
    """Returns (the replica that answered, its answer). ``order``: the replicas to try, when
    not the ring's walk (bounded loads reorder it)."""
    failures: list[tuple[str, Exception]] = []
    if len(ring) == 0:
        raise NoReplicaAvailable(failures)
    if order is None:
        owner = ring.lookup(request_id)
        try:  # the common case, kept free of the walk's allocations
            return owner, await fetch(owner)
        except UpstreamError as exc:
            failures.append((owner, exc))
            on_failure(owner, exc)
        order = (name for name in ring.walk(request_id) if name != owner)
    for name in order:
        if len(failures) >= max_attempts:
            break
        try:
            return name, await fetch(name)
        except UpstreamError as exc:
            failures.append((name, exc))
            on_failure(name, exc)
    raise NoReplicaAvailable(failures)
