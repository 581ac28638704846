"""Celery runs: W4 on the peers (RabbitMQ with rpc:// results, Redis with redis://
results) and W4c on every system (brokerd through its kombu transport); one
``celery worker --pool solo --concurrency 1`` process (see :mod:`.task_runs`).
Skipped with a reason when Celery is not importable."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ..model import SKIPPED, Skip
from .task_runs import Framework
from .task_runs import run_noop_tasks as _run
from .task_runs import run_task_latency as _run_latency

if TYPE_CHECKING:
    from ..runner import RunContext


def check_available() -> None:
    try:
        import celery  # noqa: F401
    except ImportError as exc:
        raise Skip(SKIPPED, f"celery not importable ({exc})") from exc


def _celery_urls(system: str, url: str) -> tuple[str, str]:
    if system == "rabbitmq":
        parts = urlsplit(url)
        if parts.path in ("", "/"):  # kombu spells the default vhost "//"
            url = urlunsplit((parts.scheme, parts.netloc, "//", "", ""))
        return url, "rpc://"
    return url, url


def _worker_argv(queue: str, prefetch: int, ready_file: Path) -> list[str]:
    del ready_file  # written by the app's worker_ready handler
    return [
        sys.executable, "-m", "celery", "-A", "bench.systems.celery_app", "worker",
        "--pool", "solo", "--concurrency", "1", "--queues", queue,
        "--prefetch-multiplier", str(prefetch),
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", "WARNING",
    ]  # fmt: skip


CELERY = Framework("celery", "bench.systems.celery_app", _worker_argv)


async def run_noop_tasks(ctx: RunContext, *, with_results: bool) -> tuple[float, dict[str, Any]]:
    queue = ctx.queue_name("celery-results" if with_results else "celery-ignored")
    ctx.extra_cleanup.append(lambda: _cleanup(ctx, queue))
    broker_url, backend_url = _celery_urls(ctx.system, ctx.target.url)
    env = {
        "BENCH_CELERY_BROKER": broker_url,
        "BENCH_CELERY_BACKEND": backend_url if with_results else "",
        "BENCH_W4_QUEUE": queue,
    }
    rate, details = await _run(ctx, CELERY, env, with_results=with_results)
    details.update(broker_url=broker_url, backend=backend_url if with_results else None)
    return rate, details


async def run_task_latency(ctx: RunContext, *, rate: float, count: int) -> dict[str, Any]:
    queue = ctx.queue_name("celery-latency")
    ctx.extra_cleanup.append(lambda: _cleanup(ctx, queue))
    broker_url, _ = _celery_urls(ctx.system, ctx.target.url)
    env = {"BENCH_CELERY_BROKER": broker_url, "BENCH_CELERY_BACKEND": "", "BENCH_W4_QUEUE": queue}
    info = await _run_latency(ctx, CELERY, env, rate=rate, count=count)
    info["broker_url"] = broker_url
    return info


async def _cleanup(ctx: RunContext, queue: str) -> None:
    admin: Any = ctx.admin
    with contextlib.suppress(Exception):
        await admin.delete_queue(queue)
    if ctx.system == "rabbitmq":
        with contextlib.suppress(Exception):
            await admin.channel.exchange_delete(queue)
    elif ctx.system == "redis":
        with contextlib.suppress(Exception):
            keys = [k async for k in admin.client.scan_iter(match=f"_kombu.binding*.{queue}")]
            if keys:
                await admin.client.delete(*keys)
