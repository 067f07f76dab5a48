"""py-spy for the benchmarks: sample processes while a phase runs, then print each one's
hottest functions (own time). Shared by ``bench_lb.py --profile`` and ``bench_db.py --profile``.

py-spy leaves out threads it sees idle (waiting in epoll or a socket read), but counts a thread
blocked inside a C call that holds the GIL, such as an engine's fsync, as busy.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

__all__ = ["Sampler"]


class Sampler:
    """``with Sampler({label: pid}, seconds, folder):`` samples each process for ``seconds`` at
    ``rate`` Hz from the block's start (leaving the block waits for the samplers to finish);
    ``print_top()`` after it."""

    def __init__(self, pids: dict[str, int], seconds: float, folder: Path, rate: int = 250) -> None:
        self.pids = pids
        self.seconds = seconds
        self.folder = folder
        self.rate = rate
        self.spies: dict[str, subprocess.Popen[bytes]] = {}

    def raw(self, label: str) -> Path:
        return self.folder / f"{re.sub(r'[^A-Za-z0-9_-]', '_', label)}.txt"

    def __enter__(self) -> Sampler:
        py_spy = Path(sys.executable).parent / "py-spy"
        self.spies = {label: subprocess.Popen(
            [str(py_spy), "record", "-p", str(pid), "-o", str(self.raw(label)), "-f", "raw",
             "-r", str(self.rate), "-d", str(max(1, round(self.seconds))), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for label, pid in self.pids.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        for spy in self.spies.values():
            spy.wait()

    def print_top(self, count: int = 12) -> None:
        for label in self.pids:
            own: Counter[str] = Counter()
            path = self.raw(label)
            for line in path.read_text().splitlines() if path.exists() else []:
                stack, _, samples = line.rpartition(" ")
                frame = stack.split(";")[-1]
                own[re.sub(r" \(.*/(site-packages|lib/python3[.0-9]*)/", " (", frame)] += int(samples)
            total = sum(own.values())
            print(f"\n{label} ({total} samples at {self.rate} Hz), own time:")
            for frame, samples in own.most_common(count):
                print(f"  {100 * samples / total:5.1f}%  {frame}")
