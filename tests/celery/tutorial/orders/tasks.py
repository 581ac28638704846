"""The order-processing tasks of the tutorial project (found by autodiscovery)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded

from ..runs import record

#: Bound on a task waiting for its test to open a gate (fail, never hang).
GATE_WAIT = 30.0


class PaymentDeclined(Exception):
    """A project exception: a caller's ``get()`` raises it as itself."""


@shared_task(name="orders.add")
def add(x: int, y: int) -> int:
    record("add", f"{x}+{y}")
    return x + y


@shared_task(name="orders.record")
def record_task(tag: str) -> str:
    record("ran", tag)
    return tag


@shared_task(name="orders.heartbeat")
def heartbeat(tag: str, n: int) -> int:
    record("beat", tag, n)
    return n


@shared_task(name="orders.charge")
def charge(card: str) -> None:
    record("charge", card)
    raise PaymentDeclined(f"card {card} declined")


@shared_task(name="orders.flaky", bind=True, max_retries=3)
def flaky(self: Any, tag: str) -> int:
    record("try", tag, self.request.retries)
    if self.request.retries == 0:
        raise self.retry(countdown=1)
    return int(self.request.retries)


@shared_task(name="orders.progress", bind=True)
def progress(self: Any, tag: str, gate: str) -> str:
    """Reports a custom state, then waits for the test to open ``gate``."""
    self.update_state(state="PROGRESS", meta={"tag": tag, "done": 1, "of": 2})
    record("progress", tag)
    end = time.monotonic() + GATE_WAIT
    while not Path(gate).exists() and time.monotonic() < end:
        time.sleep(0.05)
    return f"{tag} finished"


@shared_task(name="orders.stuck", time_limit=2, soft_time_limit=1)
def stuck(tag: str) -> None:
    """Ignores its soft limit and never returns: the pool kills it at the hard limit."""
    record("stuck", tag)
    end = time.monotonic() + 120
    while time.monotonic() < end:
        try:
            time.sleep(1)
        except SoftTimeLimitExceeded:
            record("ignored-soft", tag)


@shared_task(name="orders.careful", time_limit=20, soft_time_limit=1)
def careful(tag: str) -> str:
    """Cleans up when its soft limit is reached."""
    record("careful", tag)
    try:
        time.sleep(60)
    except SoftTimeLimitExceeded:
        record("soft", tag)
        return "cleaned up"
    return "slept"


@shared_task(name="orders.slow")
def slow(tag: str, seconds: float) -> str:
    record("start", tag)
    time.sleep(seconds)
    record("done", tag)
    return tag


@shared_task(name="orders.part")
def part(i: int, tag: str, pause: float = 0.0) -> int:
    """A chord header task."""
    record("part", tag, i)
    if pause:
        time.sleep(pause)
    return i


@shared_task(name="orders.part_rejected_once")
def part_rejected_once(i: int, tag: str, marks: str) -> int:
    """A chord header task that asks to be requeued on its first run."""
    mark = Path(marks) / f"{tag}-{i}"
    try:
        fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        record("part", tag, i)
        return i
    os.close(fd)
    record("rejected", tag, i)
    raise Reject("first run asks for a requeue", requeue=True)


@shared_task(name="orders.total", bind=True)
def total(self: Any, values: list[int], tag: str) -> int:
    """A chord body; its run says whether the broker had delivered it before
    (a second run after a worker died) or not (a first delivery of a message)."""
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    record("body", tag, len(values), "redelivered" if redelivered else "first")
    return sum(values)
