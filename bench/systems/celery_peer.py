"""W4 on the peers: Celery with RabbitMQ (rpc:// results) or Redis (redis:// results).

One worker process (``celery worker --pool solo --concurrency 1``) with the same prefetch
and ack-after-run policy as everywhere else; the producer runs in its own spawned process.
Skipped with a reason when Celery is not importable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ..children import collect, kill_all, spawn, wait_ready
from ..clock import now
from ..model import SKIPPED, Skip
from ..procs import REPO_ROOT, child_env
from ..progress import Counter, Progress

if TYPE_CHECKING:
    from ..runner import RunContext

WORKER_START_TIMEOUT = 60.0


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


async def run_noop_tasks(ctx: RunContext, *, with_results: bool) -> tuple[float, dict[str, Any]]:
    s = ctx.settings
    count = s.task_count
    queue = ctx.queue_name("celery-results" if with_results else "celery-ignored")
    ctx.extra_cleanup.append(lambda: _cleanup(ctx, queue))
    broker_url, backend_url = _celery_urls(ctx.system, ctx.target.url)
    workdir = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    done_file, ready_file, log_path = workdir / "done", workdir / "ready", workdir / "worker.log"
    env = {
        "BENCH_CELERY_BROKER": broker_url,
        "BENCH_CELERY_BACKEND": backend_url if with_results else "",
        "BENCH_W4_QUEUE": queue,
        "BENCH_W4_PREFETCH": str(s.prefetch),
        "BENCH_W4_EXPECT": str(count),
        "BENCH_W4_DONE_FILE": str(done_file),
        "BENCH_W4_READY_FILE": str(ready_file),
    }
    worker_env = child_env()
    worker_env.update(env)
    worker = _start_worker(queue, s.prefetch, worker_env, log_path)
    producer = None
    try:
        deadline = now() + WORKER_START_TIMEOUT
        while not ready_file.exists():
            if worker.poll() is not None or now() > deadline:
                raise RuntimeError(f"celery worker did not start: {_tail(log_path)}")
            await asyncio.sleep(0.05)
        producer = spawn(
            "producer",
            "sync:produce_tasks",
            ctx.target,
            env=env,
            count=count,
            with_results=with_results,
            result_timeout=s.stall_timeout,
        )
        await wait_ready([producer])
        producer.go.set()
        total = 2 * count if with_results else count
        label = "sent+results" if with_results else "sent"
        progress = Progress(ctx.title, [Counter(label, producer.counter, total)])
        results = await collect([producer], progress=progress, stall_timeout=s.stall_timeout)
        p = results["producer"]
        if with_results:
            t_end = p["t_end"]
        else:
            deadline = now() + s.stall_timeout + count / 100
            while not done_file.exists():
                if worker.poll() is not None or now() > deadline:
                    raise RuntimeError(f"worker did not run all {count} tasks: {_tail(log_path)}")
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.01)
            t_end = float(done_file.read_text())
        elapsed = t_end - p["t_first"]
        return count / elapsed, {
            "elapsed_s": round(elapsed, 3),
            "send_s": round(p["t_sent"] - p["t_first"], 3),
            "broker_url": broker_url,
            "backend": backend_url if with_results else None,
        }
    finally:
        if producer is not None:
            kill_all([producer])
        worker.terminate()
        try:
            await asyncio.to_thread(worker.wait, 3)  # the work is done; no need to be gentle
        except subprocess.TimeoutExpired:
            worker.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def _start_worker(
    queue: str, prefetch: int, env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """One Celery worker process: solo pool, concurrency 1, the run's prefetch."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.systems.celery_app",
                "worker",
                "--pool",
                "solo",
                "--concurrency",
                "1",
                "--queues",
                queue,
                "--prefetch-multiplier",
                str(prefetch),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "WARNING",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


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


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def produce_tasks(
    *,
    counter: Any,
    ready: Any,
    go: Any,
    env: dict[str, str],
    count: int,
    with_results: bool,
    result_timeout: float,
) -> dict[str, Any]:
    """Producer process body (synchronous, as Celery clients are)."""
    os.environ.update(env)
    from . import celery_app

    task = celery_app.noop_result if with_results else celery_app.noop_ignored
    with celery_app.app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
    ready.set()
    if not go.wait(300):
        raise TimeoutError("the parent never said go")
    results = []
    t_first = now()
    for i in range(count):
        r = task.apply_async()
        if with_results:
            results.append(r)
        counter.value = i + 1
    t_sent = now()
    for i, r in enumerate(results):
        r.get(timeout=result_timeout)
        counter.value = count + i + 1
    t_end = now()
    for r in results:  # drop stored results (Redis backend keys) once timing is done
        r.forget()
    return {"t_first": t_first, "t_sent": t_sent, "t_end": t_end, "count": count}


SYNC_ROLES = {"produce_tasks": produce_tasks}
