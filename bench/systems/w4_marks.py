"""What W4's task apps record: when the first task ran and when the last expected
one did, written to a file the harness reads. Shared by the brokerd and Celery apps.
W4c's latency task records, per task, how long after its send it started running.

A worker whose tasks run in several processes (brokerd's ``processes`` pool, compared in
docs/tasks.md) cannot count in one process's memory: with ``BENCH_W4_SHARED_MARKS`` set,
each run appends one byte to ``<done file>.marks`` (``O_APPEND``: atomic across
processes) and the size after the write is the count."""

from __future__ import annotations

import os
from pathlib import Path

from bench.clock import now

LATENCY_FILE = os.environ.get("BENCH_W4C_LATENCY_FILE", "")

EXPECT = int(os.environ.get("BENCH_W4_EXPECT", "0"))
DONE_FILE = os.environ.get("BENCH_W4_DONE_FILE", "")
SHARED = bool(os.environ.get("BENCH_W4_SHARED_MARKS"))

_ran = 0
_first = 0.0


_marks_fd = -1
_first_claimed = False


def _claim(path: str) -> bool:
    """True for the one process that creates ``path`` (``O_EXCL``)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    return True


def _shared_task_ran() -> None:
    global _marks_fd, _first_claimed
    t = now()
    if not _first_claimed:
        _first_claimed = True  # one attempt per process: the earliest attempt wins
        if _claim(f"{DONE_FILE}.first.claim"):
            Path(f"{DONE_FILE}.first.tmp").write_text(repr(t))
            os.replace(f"{DONE_FILE}.first.tmp", f"{DONE_FILE}.first")  # whole or absent
    if _marks_fd < 0:
        _marks_fd = os.open(f"{DONE_FILE}.marks", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(_marks_fd, b"x")
    # Two appends can land before either process reads the size, so ">=" and a
    # claim, not "==": exactly one process writes the result, whichever sees it.
    if os.fstat(_marks_fd).st_size >= EXPECT and _claim(f"{DONE_FILE}.last.claim"):
        done = now()
        first = Path(f"{DONE_FILE}.first")
        while not first.exists():  # the first run's process is still writing it
            pass
        Path(f"{DONE_FILE}.tmp").write_text(f"{first.read_text()} {done!r}")
        os.replace(f"{DONE_FILE}.tmp", DONE_FILE)


def task_ran() -> None:
    """Count a run; after the last expected one, write "first last" to DONE_FILE."""
    global _ran, _first
    if SHARED:
        _shared_task_ran()
        return
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
