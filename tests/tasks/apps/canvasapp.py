"""The app the canvas end-to-end tests run in real worker processes.

Tasks record runs as JSON lines in ``$E2E_STATE_DIR/<kind>.log``, so a test
counts executions across processes without trusting the worker.

``CV_DIE=before|after`` with ``CV_DIE_AT=n`` makes the worker process exit
hard around its ``n``-th canvas follow-up: ``before`` once the task's result
is stored but before anything follows it, ``after`` once everything followed
but before the message is acked. It dies once per state directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from brokerd_client.tasks import App

app = App("cv", broker=os.environ.get("BROKERD_URL", "brokerd://127.0.0.1:5673"))
app.conf.update(task_default_queue="canvas", result_expires=3600.0)


def mark(kind: str, **data: Any) -> None:
    state = os.environ.get("E2E_STATE_DIR")
    if not state:
        return
    line = json.dumps({"kind": kind, "pid": os.getpid(), "t": time.time(), **data})
    with (Path(state) / f"{kind}.log").open("a") as f:
        f.write(line + "\n")


@app.task(name="cv.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="cv.mul")
def mul(x: int, y: int) -> int:
    return x * y


@app.task(name="cv.inc")
def inc(x: int) -> int:
    return x + 1


@app.task(name="cv.tsum")
def tsum(values: list[int]) -> int:
    mark("tsum", values=values)
    return sum(values)


@app.task(name="cv.fail")
def fail(x: Any) -> None:
    raise ValueError(f"bad {x}")


@app.task(name="cv.record")
def record(value: Any, tag: str = "") -> Any:
    mark("record", value=value, tag=tag)
    return value


@app.task(name="cv.errback")
def errback(task_id: str, tag: str = "") -> str:
    mark("errback", task_id=task_id, tag=tag)
    return task_id


_DIE = os.environ.get("CV_DIE")
if _DIE:
    from brokerd_client.tasks.worker import recorder

    _real = recorder.follow_up
    _calls = [0]

    async def _dying(*args: Any, **kwargs: Any) -> None:
        _calls[0] += 1
        marker = Path(os.environ["E2E_STATE_DIR"]) / "died"
        due = _calls[0] == int(os.environ.get("CV_DIE_AT", "1")) and not marker.exists()
        if due and _DIE == "before":
            marker.touch()
            os._exit(3)
        await _real(*args, **kwargs)
        if due and _DIE == "after":
            marker.touch()
            os._exit(3)

    recorder.follow_up = _dying  # type: ignore[assignment]
