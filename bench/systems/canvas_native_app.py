"""The native app ``python -m bench.canvas`` runs in a brokerd-worker: the
same two tasks as :mod:`.canvas_celery_app`."""

from __future__ import annotations

import os

from brokerd_client.tasks import App

app = App("bench_canvas", broker=os.environ.get("CV_BROKER", "brokerd://127.0.0.1:5673"))
app.conf.update(task_default_queue=os.environ.get("CV_QUEUE", "bench-canvas"))


@app.task(name="bench.cv_inc")
def cv_inc(x: int) -> int:
    return x + 1


@app.task(name="bench.cv_sum")
def cv_sum(values: list[int]) -> int:
    return sum(values)
