"""Load generation with aiohttp: many concurrent requests, one row of results per request.

``fire`` sends ``n`` GETs with at most ``concurrency`` in flight, each with its own request id
(``X-Request-ID``, drawn from a seeded generator so a run can be repeated), and returns a
DataFrame: rid, status, server (from ``X-Served-By``), start and end (seconds since the first
request) and latency in ms. ``load`` is the async core, for runs that must do something else
meanwhile (a kill).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
import httpx
import pandas as pd
from tqdm.std import tqdm

from ..common.aio import run_sync
from .progress import bar as progress_bar

__all__ = ["COLUMNS", "Call", "fire", "load", "random_rids", "run_sync", "tour"]

T = TypeVar("T")

COLUMNS = ["rid", "status", "server", "start", "end", "latency_ms"]


def random_rids(n: int, seed: int = 0) -> list[int]:
    """``n`` six-digit request ids, as the assignment's clients send them."""
    rng = random.Random(seed)
    return [rng.randint(100000, 999999) for _ in range(n)]


async def _worker(session: aiohttp.ClientSession, path: str, next_rid: Callable[[], int | None],
                  rows: list[tuple[Any, ...]], t0: float, bar: tqdm[Any] | None) -> None:
    while (rid := next_rid()) is not None:
        start = time.perf_counter()
        try:
            async with session.get(path, headers={"X-Request-ID": str(rid)}) as response:
                await response.read()
                status, server = response.status, response.headers.get("X-Served-By", "")
        except (TimeoutError, aiohttp.ClientError) as exc:
            status, server = 0, type(exc).__name__
        end = time.perf_counter()
        rows.append((rid, status, server, start - t0, end - t0, 1000 * (end - start)))
        if bar is not None:
            bar.update()


async def load(url: str, path: str, next_rid: Callable[[], int | None], concurrency: int,
               timeout: float, bar: tqdm[Any] | None = None) -> pd.DataFrame:
    """Requests until ``next_rid`` says None; the async core of ``fire``."""
    rows: list[tuple[Any, ...]] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(url, connector=connector, timeout=client_timeout) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(_worker(session, path, next_rid, rows, t0, bar)
                               for _ in range(concurrency)))
    return pd.DataFrame(rows, columns=COLUMNS).sort_values("start", ignore_index=True)


def fire(url: str, rids: list[int], *, path: str = "/home", concurrency: int = 64,
         timeout: float = 30.0, progress: bool = True) -> pd.DataFrame:
    """One GET per request id, ``concurrency`` at a time."""
    pending = iter(rids)
    bar = progress_bar(len(rids), f"GET {path}") if progress else None
    try:
        return run_sync(load(url, path, lambda: next(pending, None), concurrency, timeout, bar))
    finally:
        if bar is not None:
            bar.close()



Call = tuple[str, str, Any]  # method, path, JSON body or None


def tour(url: str, calls: list[Call], *, timeout: float = 120.0, width: int = 400) -> pd.DataFrame:
    """Each call once, in order: request, payload, status and (the start of) the response."""
    rows = []
    with httpx.Client(base_url=url, timeout=timeout) as client:
        for method, path, body in calls:
            response = client.request(method, path, json=body) if body is not None else \
                client.request(method, path)
            rows.append({"request": f"{method} {path}",
                         "payload": "" if body is None else json.dumps(body)[:160],
                         "status": response.status_code,
                         "response": response.text[:width] or "(empty)"})
    return pd.DataFrame(rows)
