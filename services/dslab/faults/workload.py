"""The A-5 client: writers of single rows, updaters of single-writer registers, readers of
those registers, every operation recorded in a ``History``.

A register is a row whose ``Stud_marks`` is its version: one updater owns it and writes
versions 1, 2, 3... (the first by POST /write, the next by PUT /update), so a read names the
write it saw. A writer inserts rows of fresh ids, each once. A reader reads one register at a
time (POST /read of one id). A timeout, a dropped connection or a 5xx is an ``unknown``
outcome: the operation may have taken effect.

As in Jepsen, a client whose operation came out ``unknown`` goes on as a new process (a fresh
number): the unknown operation may still be in flight, and one process has one at a time.
A client that got no answer at all (the stack down) waits ``no_answer_pause`` before its next
operation, so that a power loss does not fill the history with refused connections.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .history import History, Kind, Outcome, outcome_of

__all__ = ["Workload", "read_back"]


@dataclass
class Workload:
    url: str
    writers: int = 4
    updaters: int = 4
    readers: int = 6
    registers_per_updater: int = 3
    ids: range = range(16384)  # the seed's four shards
    timeout: float = 10.0  # a client's patience: beyond it, an unknown outcome
    seed: int = 0
    taken: frozenset[int] = frozenset()  # ids held already (an earlier run's): left alone
    no_answer_pause: float = 0.05

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        ids = [i for i in self.ids if i not in self.taken]
        rng.shuffle(ids)
        n = self.updaters * self.registers_per_updater
        self.register_keys = sorted(ids[:n])
        self.registers = [sorted(ids[:n][k::self.updaters]) for k in range(self.updaters)]
        self._fresh = iter(ids[n:])

    async def run(self, seconds: float, history: History, t0: float,
                  clock: Callable[[], float] = time.monotonic) -> None:
        """Every client for ``seconds``; each operation recorded in ``history`` with times
        from ``t0`` on ``clock`` (the nemesis's)."""
        deadline = t0 + seconds
        clients = self.writers + self.updaters + self.readers
        numbers = itertools.count(clients)  # the new processes of clients after an unknown
        process_of = list(range(clients))  # client -> its process now
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(self.url, timeout=timeout, connector=connector) as s:
            async def call(client: int, kind: Kind, key: int, value: int | None, method: str,
                           path: str, body: dict[str, Any]) -> tuple[Outcome, Any]:
                start = clock() - t0
                status: int | None = None
                answer: Any = None
                detail = ""
                try:
                    async with s.request(method, path, json=body) as response:
                        status = response.status
                        answer = await response.json(content_type=None)
                        detail = str(status)
                except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                    detail = type(exc).__name__
                outcome = outcome_of(status, read=kind is Kind.READ)
                if kind is Kind.READ and outcome is Outcome.OK:
                    rows = answer["data"]
                    value = rows[0]["Stud_marks"] if rows else None
                history.add(process_of[client], kind, key, value, start, clock() - t0, outcome,
                            detail)
                if outcome is Outcome.UNKNOWN:
                    process_of[client] = next(numbers)
                if status is None:
                    await asyncio.sleep(self.no_answer_pause)
                return outcome, status

            async def writer(client: int) -> None:
                while clock() < deadline:
                    key = next(self._fresh)
                    await call(client, Kind.INSERT, key, 1, "POST", "/write",
                               {"data": [_row(key, 1)]})

            async def updater(client: int, keys: list[int]) -> None:
                version = dict.fromkeys(keys, 0)
                exists = dict.fromkeys(keys, False)
                k = 0
                while clock() < deadline:
                    key = keys[k % len(keys)]
                    k += 1
                    version[key] += 1
                    v = version[key]
                    if not exists[key]:
                        outcome, status = await call(client, Kind.WRITE, key, v, "POST",
                                                     "/write", {"data": [_row(key, v)]})
                        exists[key] = outcome is Outcome.OK or status == 409
                    else:
                        await call(client, Kind.WRITE, key, v, "PUT", "/update",
                                   {"Stud_id": key, "data": _row(key, v)})

            async def reader(client: int, rng: random.Random) -> None:
                while clock() < deadline:
                    key = rng.choice(self.register_keys)
                    await call(client, Kind.READ, key, None, "POST", "/read",
                               {"Stud_id": {"low": key, "high": key}})

            rng = random.Random(self.seed + 1)
            await asyncio.gather(
                *(writer(p) for p in range(self.writers)),
                *(updater(self.writers + p, keys) for p, keys in enumerate(self.registers)),
                *(reader(self.writers + self.updaters + p, random.Random(rng.random()))
                  for p in range(self.readers)))


async def read_back(url: str, ids: range = range(16384), attempts_for: float = 60.0
                    ) -> dict[int, int]:
    """Every row the database holds in ``ids``, Stud_id -> Stud_marks; retried (a stack just
    restarted may still be bringing shards back) until ``attempts_for`` seconds passed."""
    deadline = time.monotonic() + attempts_for
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=60)) as s:
        while True:
            try:
                async with s.post("/read", json={"Stud_id": {"low": ids.start,
                                                             "high": ids.stop - 1}}) as r:
                    if r.status == 200:
                        rows = (await r.json())["data"]
                        return {row["Stud_id"]: row["Stud_marks"] for row in rows}
                    why = f"{r.status} {await r.text()}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                why = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not read the rows back: {why}")
            await asyncio.sleep(0.2)


def _row(key: int, version: int) -> dict[str, Any]:
    return {"Stud_id": key, "Stud_name": f"R{key}", "Stud_marks": version}
