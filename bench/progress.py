"""A one-line progress display on stderr for long runs.

On a terminal the line is redrawn in place every 0.5 s; otherwise (CI logs) a plain line
is printed every 10 s so logs stay readable.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

from .clock import now


@dataclass
class Counter:
    label: str
    value: Any  # anything with an int ``.value`` (a multiprocessing RawValue)
    total: int | None = None


class Progress:
    def __init__(self, title: str, counters: list[Counter], stream: TextIO | None = None) -> None:
        self.title = title
        self.counters = counters
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.5 if self.tty else 10.0
        self.started = now()
        self._last_time = self.started
        self._last_value = 0
        self._width = 0

    def _line(self, t: float) -> str:
        parts = [f"[{self.title}]"]
        for c in self.counters:
            v = int(c.value.value)
            parts.append(f"{c.label} {v:,}" + (f"/{c.total:,}" if c.total else ""))
        main = int(self.counters[-1].value.value) if self.counters else 0
        dt = t - self._last_time
        rate = (main - self._last_value) / dt if dt > 0 else 0.0
        self._last_time, self._last_value = t, main
        parts.append(f"{rate:,.0f}/s")
        parts.append(f"{t - self.started:.1f}s")
        return "  ".join(parts)

    def tick(self, force: bool = False) -> None:
        t = now()
        if not force and t - self._last_time < self.interval:
            return
        line = self._line(t)
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


class Status:
    """A progress line for phases without counters (starting a broker, waiting)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr

    def say(self, text: str) -> None:
        if self.stream.isatty():
            self.stream.write("\r\x1b[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.stream.isatty():
            self.stream.write("\r\x1b[K")
            self.stream.flush()
