"""Named tasks that record each run as a line in the file ``$BROKERD_TEST_RUNS``
(there is no result backend in these tests)."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import shared_task


def record(*words: object) -> None:
    line = " ".join(str(w) for w in (*words, os.getpid(), f"{time.time():.3f}")) + "\n"
    fd = os.open(os.environ["BROKERD_TEST_RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@shared_task(name="task.record")
def record_task(tag: str) -> None:
    record("ran", tag)


@shared_task(name="task.sleep")
def sleep_task(tag: str, seconds: float) -> None:
    record("start", tag)
    time.sleep(seconds)
    record("done", tag)


@shared_task(name="task.flaky", bind=True, max_retries=3)
def flaky_task(self: Any, tag: str, countdown: float) -> None:
    record("try", tag, self.request.retries)
    if self.request.retries == 0:
        raise self.retry(countdown=countdown)


@shared_task(name="web.render")
def render_task(tag: str) -> None:
    record("web", tag)


@shared_task(name="task.gate")
def gate_task(tag: str, gate: str) -> None:
    """Runs until the file ``gate`` exists: a task that stays running for as
    long as a test needs it to (remote control tests), then records it ended."""
    record("start", tag)
    deadline = time.monotonic() + 45  # under task_soft_time_limit
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    record("done", tag)
