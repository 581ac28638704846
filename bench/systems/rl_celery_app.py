"""The Celery app ``python -m bench.ratelimit`` runs in two Celery workers.

The same task and rate limit as :mod:`.rl_native_app`, on RabbitMQ or Redis;
Celery enforces the limit in each worker, which is what the bench shows."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_ready

app = Celery("bench_rl", broker=os.environ.get("RL_BROKER", "amqp://guest:guest@127.0.0.1:5672//"))
app.conf.update(
    task_default_queue=os.environ.get("RL_QUEUE", "bench-rl"),
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.rl_tick", rate_limit=os.environ.get("RL_RATE", "20/s"))  # type: ignore[untyped-decorator]
def rl_tick(i: int) -> None:
    with open(os.environ["RL_LOG"], "a") as f:
        f.write(f"{time.time()} {os.getpid()}\n")


@worker_ready.connect  # type: ignore[untyped-decorator]
def _ready(**_: Any) -> None:
    ready_dir = os.environ.get("RL_READY_DIR")
    if ready_dir:
        (Path(ready_dir) / f"{os.getpid()}.ready").touch()
