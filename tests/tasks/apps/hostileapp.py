"""The app of the hostile-input end-to-end tests (test_e2e_hostile.py).

Its queue has a dead-letter queue, so what the worker refuses can be read
back with the reason; tasks record each run as a JSON line in
``$E2E_STATE_DIR/<kind>.log`` so a test counts runs across processes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from brokerd_client.tasks import App, Queue

app = App("hostile", broker=os.environ.get("BROKERD_URL", "brokerd://127.0.0.1:5673"))
app.conf.update(
    task_default_queue="guarded",
    task_queues=[Queue("guarded", dead_letter_queue="guarded.dlq"), Queue("guarded.dlq")],
    worker_summary_interval=1.0,
)


def mark(kind: str, **data: Any) -> None:
    state = os.environ.get("E2E_STATE_DIR")
    if not state:
        return
    line = json.dumps({"kind": kind, "pid": os.getpid(), "t": time.time(), **data})
    with (Path(state) / f"{kind}.log").open("a") as f:
        f.write(line + "\n")


@app.task(name="h.echo")
def echo(value: Any = None) -> Any:
    return value


@app.task(name="h.big")
def big(size: int) -> str:
    mark("big", size=size)
    return "x" * size


@app.task(name="h.abig")
async def abig(size: int) -> str:
    mark("abig", size=size)
    return "x" * size


@app.task(name="h.spawn_big")
async def spawn_big(size: int) -> str:
    mark("spawn_big", size=size)
    echo.delay("x" * size)
    return "sent"


@app.task(name="h.retry_big", bind=True, max_retries=3)
def retry_big(self: Any, size: int, pad: str = "") -> str:
    mark("retry_big", retries=self.request.retries)
    raise self.retry(args=[size, "x" * size], countdown=0)


@app.task(name="h.spawn_invalid")
async def spawn_invalid() -> str:
    mark("spawn_invalid")
    echo.apply_async((1,), countdown=-1)  # refused when the worker publishes it
    return "sent"
