"""W4 on brokerd: noop tasks through one ``brokerd-worker`` process, using the task SDK
``brokerd_client.tasks`` (see :mod:`.task_runs`). The SDK is imported lazily: without it
the workload reports 'not available' and the run goes on.

Each framework runs in its fastest single-process configuration: Celery's ``solo`` pool
runs one task at a time; brokerd's ``asyncio`` pool runs plain functions on
``CONCURRENCY`` threads inside its one process, so a task's ack round trip overlaps the
next tasks. Prefetch is the run's setting for both.

To compare worker configurations (docs/tasks.md's pool and ``-l info`` figures),
``BENCH_BROKERD_POOL``, ``BENCH_BROKERD_CONCURRENCY`` and ``BENCH_BROKERD_LOGLEVEL`` in
the bench's environment replace the pool, the thread/process count and the log level;
unset, W4 runs as described above (the worker's log then goes to the run's temp dir)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model import NOT_AVAILABLE, Skip
from .task_runs import Framework
from .task_runs import run_noop_tasks as _run

if TYPE_CHECKING:
    from ..runner import RunContext


def check_available() -> None:
    try:
        from brokerd_client.tasks import App  # noqa: F401
    except ImportError as exc:
        raise Skip(NOT_AVAILABLE, f"brokerd_client.tasks not importable ({exc})") from exc


#: Threads of the one worker process (see the module docstring).
CONCURRENCY = 16


def _worker_argv(queue: str, prefetch: int, ready_file: Path) -> list[str]:
    pool = os.environ.get("BENCH_BROKERD_POOL", "asyncio")
    concurrency = os.environ.get("BENCH_BROKERD_CONCURRENCY", str(CONCURRENCY))
    loglevel = os.environ.get("BENCH_BROKERD_LOGLEVEL", "warning")
    return [
        sys.executable, "-m", "brokerd_client.worker",
        "-A", "bench.systems.brokerd_task_app:app",
        "--pool", pool, "--concurrency", concurrency, "--queues", queue,
        "--prefetch", str(prefetch), "--ready-file", str(ready_file),
        "--without-banner", "--loglevel", loglevel,
    ]  # fmt: skip


BROKERD = Framework("brokerd", "bench.systems.brokerd_task_app", _worker_argv)


async def run_noop_tasks(ctx: RunContext, *, with_results: bool) -> tuple[float, dict[str, Any]]:
    queue = ctx.queue_name("tasks-results" if with_results else "tasks-ignored")
    env = {"BENCH_BROKERD_URL": ctx.target.url, "BENCH_W4_QUEUE": queue}
    if os.environ.get("BENCH_BROKERD_POOL") == "processes":
        env["BENCH_W4_SHARED_MARKS"] = "1"  # tasks run in several processes (w4_marks)
    return await _run(ctx, BROKERD, env, with_results=with_results)
