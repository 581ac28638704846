"""The brokerd task-SDK app used by W4 (imported by ``brokerd-worker`` and the producer).

Configured from the environment set by :mod:`bench.systems.brokerd_tasks`; the same policy
as the Celery twin (:mod:`bench.systems.celery_app`): durable queue, confirmed sends, ack
after the task ran, JSON, prefetch from the run's settings.
"""

from __future__ import annotations

import os

from bench.systems.w4_marks import task_ran
from brokerd_client.tasks import App

BROKER = os.environ.get("BENCH_BROKERD_URL", "brokerd://127.0.0.1:5673")
QUEUE = os.environ.get("BENCH_W4_QUEUE", "bench-w4")
PREFETCH = int(os.environ.get("BENCH_W4_PREFETCH", "100"))

app = App("bench_w4", broker=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    task_acks_late=True,
    worker_prefetch=PREFETCH,
    task_serializer="json",
    result_serializer="json",
    result_expires=600.0,
)


@app.task(name="bench.noop_ignored", ignore_result=True)
def noop_ignored() -> None:
    task_ran()


@app.task(name="bench.noop_result")
def noop_result() -> None:
    task_ran()
