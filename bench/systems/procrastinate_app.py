"""The procrastinate app ``python -m bench.pgtasks`` runs: W4's noop task.

procrastinate keeps its jobs in PostgreSQL tables and its workers take them with
``SELECT ... FOR UPDATE SKIP LOCKED`` (woken by LISTEN/NOTIFY), the design
brokerd's PostgreSQL store is compared against. The task records its runs with
W4's marks, so the rate is computed exactly as W4's."""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

from bench.systems.w4_marks import task_ran

QUEUE = os.environ.get("BENCH_W4_QUEUE", "bench")

app = App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_PROCRASTINATE_DB", "")))


@app.task(name="bench.noop", queue=QUEUE)
async def noop() -> None:
    task_ran()
