"""The native app a brokerd worker runs in the mixed-fleet tests (test_mixed_e2e.py).

The same task names a Celery producer calls, registered with the native SDK
and consumed from Celery's default queue ``celery`` (with a dead-letter
queue, so a refused message can be read back with its reason). Tasks append
JSON lines to ``$MIXED_STATE_DIR/<kind>.log`` so a test counts runs across
processes without trusting the worker's own report.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from brokerd_client.tasks import App, Queue

app = App("mixed", broker=os.environ.get("BROKERD_URL", "brokerd://127.0.0.1:5673"))
app.conf.update(
    task_default_queue="celery",
    task_queues=[Queue("celery", dead_letter_queue="celery.dlq"), Queue("celery.dlq")],
    accept_content=["json", "msgpack"],
    worker_summary_interval=1.0,
)


def mark(kind: str, **data: Any) -> None:
    state = os.environ.get("MIXED_STATE_DIR")
    if not state:
        return
    line = json.dumps({"kind": kind, "pid": os.getpid(), "t": time.time(), **data})
    with (Path(state) / f"{kind}.log").open("a") as f:
        f.write(line + "\n")


@app.task(name="m.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="m.describe")
def describe(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """What arrived, with each value's type name (kombu's typed json values)."""
    return {
        "args": list(args),
        "kwargs": kwargs,
        "types": {key: type(value).__name__ for key, value in kwargs.items()},
    }


@app.task(name="m.stamp")
def stamp(tag: str) -> str:
    mark("stamp", tag=tag)
    return tag


@app.task(name="m.fail")
def fail(text: str) -> None:
    raise ValueError(text)


@app.task(name="m.fails_once")
def fails_once(tag: str) -> str:
    """Fails its first run for ``tag``; later runs succeed."""
    marker = Path(os.environ["MIXED_STATE_DIR"]) / f"fails_once.{tag}"
    mark("fails_once", tag=tag)
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"first run of {tag}")
    return f"second run of {tag}"


@app.task(name="m.flaky", bind=True, max_retries=3)
def flaky(self: Any, until: int) -> int:
    mark("flaky", retries=self.request.retries)
    if self.request.retries < until:
        raise self.retry(countdown=0.2)
    return int(self.request.retries)


@app.task(name="m.flaky_args", bind=True, max_retries=3)
def flaky_args(self: Any, step: int) -> int:
    mark("flaky_args", step=step, retries=self.request.retries)
    if step < 2:
        raise self.retry(args=[step + 1], countdown=0)
    return step
