"""What W4's task apps record: when the first task ran and when the last expected
one did, written to a file the harness reads. Shared by the brokerd and Celery apps.
W4c's latency task records, per task, how long after its send it started running."""

from __future__ import annotations

import os
from pathlib import Path

from bench.clock import now

LATENCY_FILE = os.environ.get("BENCH_W4C_LATENCY_FILE", "")

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


_latencies: list[float] = []


def latency_seen(sent_at: float) -> None:
    """Record now - ``sent_at``; after the last expected task, write them all to LATENCY_FILE."""
    if sent_at < 0:
        return  # the producer's warm-up task
    _latencies.append(now() - sent_at)
    if len(_latencies) == EXPECT and LATENCY_FILE:
        Path(LATENCY_FILE).write_text("\n".join(repr(x) for x in _latencies))
