"""The proxy's per-request counts: answers per replica and status, and the latency histogram.

Counted in cells (a signed 64-bit integer each) rather than through prometheus_client's
metrics, whose every ``inc`` in multiprocess mode (``--workers``) takes a lock, asks the kernel
for the process id (a system call, to notice a fork) and packs a float into a file: three
times per request (a counter, a histogram's bucket and its sum), a fifth of the proxy's Python
per request, measured (``bench/bench_hotpath.py``). A cell costs an add.

One writer per table. A single process counts in memory (``Tally.in_memory``); worker ``row``
of several counts in a file of the workers' shared folder, mapped (``Tally.in_folder``), so
what it counted is in the file at once, outlives it, and its successor goes on counting in the
same table. A table's first cells are the histogram: one per bucket (the last for +Inf), then
the sum in nanoseconds; after them one cell per (replica, status), in the order they were
first answered, each named by a line of the key file beside it, written before the cell is
first counted. ``TallyCollector`` serves what every table counted as Prometheus families.
"""

from __future__ import annotations

import json
import mmap
import os
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..common.metrics import LATENCY_BUCKETS

__all__ = ["OVERFLOW", "Tally", "TallyCollector", "Tallied", "read_folder"]

CAPACITY = 1 << 16  # cells per table; the last counts the (replica, status) pairs past it,
OVERFLOW = "(overflow)"  # as replica OVERFLOW and status 0
_OVERFLOW_CELL = CAPACITY - 1
_BOUNDS_NS = tuple(round(b * 1e9) for b in LATENCY_BUCKETS)
_SUM = len(_BOUNDS_NS) + 1  # the cell of the latency sum, after the buckets and +Inf
_FIRST_ANSWER_CELL = _SUM + 1
_CELL = 8


@dataclass
class Tallied:
    """What one or several tables counted."""

    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(_BOUNDS_NS) + 1))
    sum_ns: int = 0

    def add(self, other: Tallied) -> None:
        self.answers.update(other.answers)
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.sum_ns += other.sum_ns


def _tallied(cells: memoryview, keys: Iterable[tuple[str, int, int]]) -> Tallied:
    answers: Counter[tuple[str, int]] = Counter()
    for replica, status, cell in keys:
        if cells[cell]:
            answers[(replica, status)] += cells[cell]
    return Tallied(answers, list(cells[:_SUM]), cells[_SUM])


def _read_keys(path: Path) -> list[tuple[str, int, int]]:
    """The key file's lines; a last line without its newline is being written: not yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    keys = []
    for line in text.split("\n")[:-1]:
        replica, status, cell = json.loads(line)
        keys.append((str(replica), int(status), int(cell)))
    return keys


def _paths(folder: Path, row: int) -> tuple[Path, Path]:
    return folder / f"tally-{row}", folder / f"tally-{row}.keys"


class Tally:
    """The counting side of one table; ``answered`` is the hot path."""

    def __init__(self, cells: memoryview, keys: list[tuple[str, int, int]],
                 record: Callable[[str, int, int], None], *, close: Callable[[], None]) -> None:
        self._cells = cells
        self._keys = keys
        self._by_key = {(replica, status): cell for replica, status, cell in keys}
        self._next = max((cell for _, _, cell in keys), default=_FIRST_ANSWER_CELL - 1) + 1
        self._record = record
        self._close = close

    @classmethod
    def in_memory(cls) -> Tally:
        cells = memoryview(bytearray(CAPACITY * _CELL)).cast("q")
        return cls(cells, [], lambda replica, status, cell: None, close=cells.release)

    @classmethod
    def in_folder(cls, folder: Path, row: int) -> Tally:
        """Worker ``row``'s table in ``folder``, created or taken over from its predecessor."""
        table, key_file = _paths(folder, row)
        fd = os.open(table, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < CAPACITY * _CELL:
                os.ftruncate(fd, CAPACITY * _CELL)  # zeroes: sparse until counted in
            mapped = mmap.mmap(fd, CAPACITY * _CELL)
        finally:
            os.close(fd)
        cells = memoryview(mapped).cast("q")
        keys_fd = os.open(key_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

        def record(replica: str, status: int, cell: int) -> None:
            os.write(keys_fd, (json.dumps([replica, status, cell]) + "\n").encode())

        def close() -> None:
            cells.release()
            mapped.close()
            os.close(keys_fd)

        return cls(cells, _read_keys(key_file), record, close=close)

    def answered(self, replica: str, status: int, elapsed_ns: int) -> None:
        """A proxied answer of ``status`` from ``replica``, ``elapsed_ns`` after the request."""
        cells = self._cells
        cell = self._by_key.get((replica, status))
        if cell is None:
            cell = self._new_cell(replica, status)
        cells[cell] += 1
        cells[bisect_left(_BOUNDS_NS, elapsed_ns)] += 1
        cells[_SUM] += elapsed_ns

    def _new_cell(self, replica: str, status: int) -> int:
        if self._next < _OVERFLOW_CELL:
            cell = self._next
            self._next += 1
            self._name(replica, status, cell)
        else:
            cell = _OVERFLOW_CELL
            if (OVERFLOW, 0) not in self._by_key:
                self._name(OVERFLOW, 0, cell)
        self._by_key[(replica, status)] = cell
        return cell

    def _name(self, replica: str, status: int, cell: int) -> None:
        self._record(replica, status, cell)  # in the file before it counts: no reader guesses
        self._keys.append((replica, status, cell))
        self._by_key[(replica, status)] = cell

    def tallied(self) -> Tallied:
        return _tallied(self._cells, self._keys)

    def close(self) -> None:
        self._close()


def read_folder(folder: Path, rows: int) -> Tallied:
    """What the ``rows`` tables of a folder counted, read from the files (one writer each)."""
    total = Tallied()
    for row in range(rows):
        table, key_file = _paths(folder, row)
        keys = _read_keys(key_file)  # before the cells: every key read names a written cell
        try:
            data = table.read_bytes()
        except FileNotFoundError:
            continue
        total.add(_tallied(memoryview(data).cast("q"), keys))
    return total


class TallyCollector(Collector):
    """``dslab_requests_total`` by replica and code, and ``dslab_request_duration_seconds``."""

    def __init__(self, read: Callable[[], Tallied]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        tallied = self._read()
        requests = CounterMetricFamily("dslab_requests", "Proxied requests, by the replica "
                                       "that answered and its status", labels=["replica", "code"])
        for (replica, status), count in sorted(tallied.answers.items()):
            requests.add_metric([replica, str(status)], count)
        yield requests
        cumulative, buckets = 0, []
        for bound, count in zip([*map(repr, LATENCY_BUCKETS), "+Inf"], tallied.buckets,
                                strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily("dslab_request_duration_seconds", "Time to a proxied answer",
                                    buckets=buckets, sum_value=tallied.sum_ns / 1e9)
