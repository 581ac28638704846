"""The app the end-to-end tests run in real worker processes.

Tasks record what they do as JSON lines in ``$E2E_STATE_DIR/<name>.log`` so a
test can count executions across processes without trusting the worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from brokerd_client.tasks import App, Queue, SoftTimeLimitExceeded, crontab

app = App("e2e", broker=os.environ.get("BROKERD_URL", "brokerd://127.0.0.1:5673"))
app.conf.update(
    task_default_queue="default",
    task_queues=[
        Queue("default"),
        Queue("short", lease=1.0),
        Queue("web_tasks"),
    ],
    task_routes={"e2e.web.*": {"queue": "web_tasks"}},
    result_expires=float(os.environ.get("E2E_RESULT_EXPIRES", "3600")),
    worker_summary_interval=1.0,
    worker_shutdown_timeout=float(os.environ.get("E2E_GRACE", "30")),
)
if os.environ.get("E2E_ACKS_EARLY"):
    app.conf.task_acks_late = False
if os.environ.get("E2E_BAD_CRON"):
    app.conf.beat_schedule = {"bad": {"task": "e2e.tick", "schedule": crontab(minute="61")}}
if os.environ.get("E2E_BEAT"):
    app.conf.beat_schedule = {
        "every-second": {"task": "e2e.tick", "schedule": 1.0, "args": ("beat",)},
    }


def mark(kind: str, **data: Any) -> None:
    """Append one event line (atomic for short lines with O_APPEND)."""
    state = os.environ.get("E2E_STATE_DIR")
    if not state:
        return
    line = json.dumps({"kind": kind, "pid": os.getpid(), "t": time.time(), **data})
    with (Path(state) / f"{kind}.log").open("a") as f:
        f.write(line + "\n")


@app.task(name="e2e.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="e2e.web.echo")
def web_echo(value: Any) -> Any:
    return value


@app.task(name="e2e.long", queue="short")
def long_task(seconds: float, tag: str) -> str:
    mark("long", tag=tag)
    time.sleep(seconds)
    mark("long_done", tag=tag)
    return tag


@app.task(name="e2e.boom")
def boom(message: str) -> None:
    raise ValueError(message)


@app.task(name="e2e.limited", rate_limit="5/s")
def limited(tag: str) -> str:
    mark("limited", tag=tag)
    return tag


@app.task(name="e2e.stamp")
def stamp(tag: str) -> float:
    mark("stamp", tag=tag)
    return time.time()


@app.task(
    name="e2e.flaky",
    bind=True,
    autoretry_for=(ConnectionError,),
    max_retries=3,
    retry_backoff=0.5,
    retry_backoff_max=10,
)
def flaky(self: Any, tag: str) -> None:
    mark("flaky", tag=tag, retries=self.request.retries)
    raise ConnectionError(f"backend down ({tag})")


@app.task(name="e2e.manual_retry", bind=True, max_retries=2)
def manual_retry(self: Any, tag: str) -> str:
    mark("manual", tag=tag, retries=self.request.retries)
    if self.request.retries < 2:
        raise self.retry(countdown=0.2, exc=KeyError(tag))
    return f"done after {self.request.retries}"


@app.task(name="e2e.fails_once")
def fails_once(tag: str) -> str:
    """Fails its first run for ``tag``, succeeds on any later one (a marker
    file in the state directory remembers the first run across processes)."""
    marker = Path(os.environ["E2E_STATE_DIR"]) / f"fails_once.{tag}"
    mark("fails_once", tag=tag)
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"first run of {tag}")
    return f"second run of {tag}"


@app.task(name="e2e.sleep")
def sleep_sync(seconds: float, tag: str = "") -> float:
    mark("sleep", tag=tag)
    time.sleep(seconds)
    mark("sleep_done", tag=tag)
    return seconds


@app.task(name="e2e.first_wins")
def first_wins(first: float, again: float) -> str:
    """Sleeps ``first`` s on its first run, ``again`` s on later ones (a
    broker that crashed may deliver it again with the same attempt number)."""
    state = os.environ.get("E2E_STATE_DIR")
    earlier = (Path(state) / "first_wins.log") if state else None
    run = 1 + (len(earlier.read_text().splitlines()) if earlier and earlier.exists() else 0)
    mark("first_wins", run=run)
    time.sleep(first if run == 1 else again)
    mark("first_wins_done", run=run)
    return f"run {run}"


@app.task(name="e2e.asleep")
async def sleep_async(seconds: float, tag: str = "") -> float:
    mark("asleep", tag=tag)
    await asyncio.sleep(seconds)
    mark("asleep_done", tag=tag)
    return seconds


@app.task(name="e2e.soft", soft_time_limit=0.5, time_limit=10)
def soft(tag: str) -> str:
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        mark("soft_caught", tag=tag)
        return "cleaned up"
    return "not interrupted"


@app.task(name="e2e.asoft", soft_time_limit=0.5, time_limit=10)
async def asoft(tag: str) -> str:
    try:
        await asyncio.sleep(5)
    except SoftTimeLimitExceeded:
        mark("soft_caught", tag=tag)
        return "cleaned up"
    return "not interrupted"


@app.task(name="e2e.tick", bind=True)
def tick(self: Any, tag: str) -> None:
    mark("tick", tag=tag, id=self.request.id, at=self.request.headers.get("x-scheduled-at"))


@app.task(name="e2e.pid")
def pid() -> int:
    return os.getpid()


@app.task(name="e2e.noop", ignore_result=True)
def noop() -> None:
    return None


@app.task(name="e2e.anoop", ignore_result=True)
async def anoop() -> None:
    return None


@app.task(name="e2e.cpu", ignore_result=True)
def cpu() -> int:
    """Milliseconds of pure-Python work holding the GIL (docs/tasks.md, Pools)."""
    total = 0
    for i in range(30_000):
        total += i * i % 7
    return total


@app.task(name="e2e.noop_result")
def noop_result() -> None:
    return None


@app.task(name="e2e.spawn")
async def spawn(x: int) -> str:
    result = add.delay(x, x)
    return result.id


@app.task(name="e2e.tracked", track_started=True)
def tracked(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="e2e.blocking_get")
async def blocking_get() -> str:
    try:
        add.delay(1, 1).get(timeout=1)
    except RuntimeError as exc:
        return str(exc)
    return "get() did not refuse"


@app.task(name="e2e.araise")
async def araise(kind: str) -> None:
    if kind == "cancelled":
        raise asyncio.CancelledError("not a cancellation of the job")
    raise KeyboardInterrupt


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot describe this error")


@app.task(name="e2e.raise_sync")
def raise_sync(kind: str) -> None:
    if kind == "unprintable":
        raise _Unprintable
    raise KeyboardInterrupt
