"""The native app ``python -m bench.ratelimit`` runs in two brokerd-workers.

One task with a rate limit; each run appends its start time to ``RL_LOG``
(one short line, O_APPEND), so the bench counts starts across processes."""

from __future__ import annotations

import os
import time

from brokerd_client.tasks import App

app = App("bench_rl", broker=os.environ.get("RL_BROKER", "brokerd://127.0.0.1:5673"))
app.conf.update(task_default_queue=os.environ.get("RL_QUEUE", "bench-rl"))


@app.task(name="bench.rl_tick", rate_limit=os.environ.get("RL_RATE", "20/s"), ignore_result=True)
def rl_tick(i: int) -> None:
    with open(os.environ["RL_LOG"], "a") as f:
        f.write(f"{time.time()} {os.getpid()}\n")
