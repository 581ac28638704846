"""What W4's task apps record: when the first task ran and when the last expected
one did, written to a file the harness reads. Shared by the brokerd and Celery apps."""

from __future__ import annotations

import os
from pathlib import Path

from bench.clock import now

EXPECT = int(os.environ.get("BENCH_W4_EXPECT", "0"))
DONE_FILE = os.environ.get("BENCH_W4_DONE_FILE", "")

_ran = 0
_first = 0.0


def task_ran() -> None:
    """Count a run; after the last expected one, write "first last" to DONE_FILE."""
    global _ran, _first
    _ran += 1
    if _ran == 1:
        _first = now()
    if _ran == EXPECT and DONE_FILE:
        Path(DONE_FILE).write_text(f"{_first!r} {now()!r}")
