"""The Celery app ``python -m bench.canvas`` runs: one task that adds one, and
one that sums a chord header's results.

The broker and result backend come from the environment, so one module serves
Celery on brokerd, on RabbitMQ (results in Redis: RabbitMQ's own ``rpc://``
backend cannot run chords) and on Redis."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_ready

BROKER = os.environ.get("CV_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
if BROKER.startswith(("brokerd://", "brokerds://")):
    # The one documented line for processes the celery CLI did not start.
    import brokerd_client.celery  # noqa: F401

app = Celery("bench_canvas", broker=BROKER, backend=os.environ.get("CV_BACKEND"))
app.conf.update(
    task_default_queue=os.environ.get("CV_QUEUE", "bench-canvas"),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=600,
)


@app.task(name="bench.cv_inc")  # type: ignore[untyped-decorator]
def cv_inc(x: int) -> int:
    return x + 1


@app.task(name="bench.cv_sum")  # type: ignore[untyped-decorator]
def cv_sum(values: list[int]) -> int:
    return sum(values)


@worker_ready.connect  # type: ignore[untyped-decorator]
def _ready(**_: Any) -> None:
    ready_dir = os.environ.get("CV_READY_DIR")
    if ready_dir:
        (Path(ready_dir) / f"{os.getpid()}.ready").touch()
