"""A progress line for long data jobs (prepare's tasks, encode's chunks): done/total,
MB/s, documents/s and the time left, on stderr. On a terminal it rewrites one line; in
a log it prints a line every `every` seconds and the last one."""
from __future__ import annotations

import sys
import time


def _clock(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(self, label: str, units: int, total_bytes: int, unit: str = "tasks", enabled: bool = True,
                 every: float = 10.0, stream=None):
        self.label, self.units, self.total_bytes, self.unit = label, units, max(1, total_bytes), unit
        self.stream = stream or sys.stderr
        self.enabled = enabled and units > 0
        self.tty = self.enabled and self.stream.isatty()
        self.every = 0.5 if self.tty else every
        self.t0 = self.last = time.perf_counter()
        self.done = self.bytes = self.docs = 0

    def update(self, nbytes: int, ndocs: int, units: int = 1) -> None:
        self.done += units
        self.bytes += nbytes
        self.docs += ndocs
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.every or self.done >= self.units):
            self.last = now
            self._print(now)

    def line(self, now: float | None = None) -> str:
        secs = max(1e-9, (now or time.perf_counter()) - self.t0)
        rate = self.bytes / secs
        left = (self.total_bytes - self.bytes) / rate if rate > 0 else 0.0
        return (f"[{self.label}] {self.done}/{self.units} {self.unit}  {self.bytes / 1e6:,.0f}/"
                f"{self.total_bytes / 1e6:,.0f} MB  {rate / 1e6:,.1f} MB/s  {self.docs / secs:,.0f} docs/s  "
                f"elapsed {_clock(secs)}  left {_clock(left if self.done < self.units else 0)}")

    def _print(self, now: float) -> None:
        end = "\n" if not self.tty or self.done >= self.units else ""
        self.stream.write(("\r" if self.tty else "") + self.line(now) + end)
        self.stream.flush()
