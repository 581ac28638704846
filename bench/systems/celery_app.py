"""The Celery app used by W4 on the peers (imported by the worker and the producer).

Configured from the environment set by :mod:`bench.systems.celery_peer`: broker and
result backend URLs, queue name, prefetch, and the files used to signal "worker ready" and
"all expected tasks ran". Same policy as the other workloads: durable queue, persistent
messages, publisher confirms (AMQP), ack after the task ran (``acks_late``), JSON only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from bench.systems.w4_marks import latency_seen, task_ran

if os.environ.get("BENCH_CELERY_BROKER", "").startswith("brokerd://"):
    # The one line a process not started by the celery CLI needs to use brokerd://
    # (kombu has no entry point group for transports; brokerd_client/celery/__init__.py).
    import brokerd_client.celery  # noqa: F401

BROKER = os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND = os.environ.get("BENCH_CELERY_BACKEND") or None
QUEUE = os.environ.get("BENCH_W4_QUEUE", "bench-w4")
PREFETCH = int(os.environ.get("BENCH_W4_PREFETCH", "100"))
READY_FILE = os.environ.get("BENCH_W4_READY_FILE", "")

app = Celery("bench_w4", broker=BROKER, backend=BACKEND)
app.conf.update(
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    task_default_delivery_mode="persistent",
    task_acks_late=True,
    worker_prefetch_multiplier=PREFETCH,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=600,
    broker_connection_retry_on_startup=True,
    # Every producer waits for the broker's confirm (brokerd's transport does by default).
    broker_transport_options={"confirm_publish": True} if BROKER.startswith("amqp") else {},
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    worker_enable_remote_control=False,
)


@app.task(name="bench.noop_ignored", ignore_result=True)  # type: ignore[untyped-decorator]
def noop_ignored() -> None:
    task_ran()


@app.task(name="bench.noop_result")  # type: ignore[untyped-decorator]
def noop_result() -> None:
    task_ran()


@app.task(name="bench.noop_latency", ignore_result=True)  # type: ignore[untyped-decorator]
def noop_latency(sent_at: float) -> None:
    latency_seen(sent_at)


@worker_ready.connect  # type: ignore[untyped-decorator]
def _on_ready(**_: Any) -> None:
    if READY_FILE:
        Path(READY_FILE).write_text("ready")
