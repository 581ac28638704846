"""W4's shared procedure: noop tasks through ONE worker process, for any task framework.

A framework (Celery on a peer, brokerd's task SDK) supplies an app module exposing ``app``,
``noop_ignored`` (``ignore_result=True``) and ``noop_result``, configured from the
``BENCH_*`` environment below, and the command line of one worker process. The worker runs
tasks inline (Celery ``--pool solo``, brokerd ``--pool asyncio``), concurrency 1, the
run's prefetch, ack after the task ran. Its app counts the tasks it ran and writes
:func:`bench.clock.now` to a file when it has run them all.

The producer runs in its own spawned process and sends tasks one by one, each send
returning once the broker confirmed it. Results ignored: time from the first send to the
worker running the last task. With results: to the producer holding the last result.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..children import collect, kill_all, spawn, wait_ready
from ..clock import now
from ..procs import REPO_ROOT, child_env
from ..progress import Counter, Progress

if TYPE_CHECKING:
    from ..runner import RunContext

WORKER_START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Framework:
    name: str  # "celery" | "brokerd"
    app_module: str
    # (queue, prefetch, ready_file) -> argv of one worker process
    worker_argv: Callable[[str, int, Path], list[str]]


async def run_noop_tasks(
    ctx: RunContext, framework: Framework, env: dict[str, str], *, with_results: bool
) -> tuple[float, dict[str, Any]]:
    s = ctx.settings
    count = s.task_count
    queue = env["BENCH_W4_QUEUE"]
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{framework.name}-"))
    done_file, ready_file, log_path = workdir / "done", workdir / "ready", workdir / "worker.log"
    env = {
        **env,
        "BENCH_W4_PREFETCH": str(s.prefetch),
        "BENCH_W4_EXPECT": str(count),
        "BENCH_W4_DONE_FILE": str(done_file),
        "BENCH_W4_READY_FILE": str(ready_file),
    }
    worker_env = child_env()
    worker_env.update(env)
    worker = _start_worker(
        framework.worker_argv(queue, s.prefetch, ready_file), worker_env, log_path
    )
    producer = None
    try:
        deadline = now() + WORKER_START_TIMEOUT
        while not ready_file.exists():
            if worker.poll() is not None or now() > deadline:
                raise RuntimeError(f"{framework.name} worker did not start: {_tail(log_path)}")
            await asyncio.sleep(0.02)
        producer = spawn(
            "producer",
            "sync:produce_tasks",
            ctx.target,
            framework=framework.name,
            app_module=framework.app_module,
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
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.01)
            t_end = float(done_file.read_text())
        elapsed = t_end - p["t_first"]
        return count / elapsed, {
            "elapsed_s": round(elapsed, 3),
            "send_s": round(p["t_sent"] - p["t_first"], 3),
            "framework": framework.name,
        }
    finally:
        if producer is not None:
            kill_all([producer])
        worker.terminate()
        try:
            await asyncio.to_thread(worker.wait, 3)  # the work is done; no need to be gentle
        except subprocess.TimeoutExpired:
            worker.kill()
            await asyncio.to_thread(worker.wait)
        shutil.rmtree(workdir, ignore_errors=True)


def _start_worker(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


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
    framework: str,
    app_module: str,
    env: dict[str, str],
    count: int,
    with_results: bool,
    result_timeout: float,
) -> dict[str, Any]:
    """Producer process body (synchronous: both frameworks' ``delay()`` blocks until the
    broker confirmed the message)."""
    os.environ.update(env)
    mod = importlib.import_module(app_module)
    task = mod.noop_result if with_results else mod.noop_ignored
    if framework == "celery":
        with mod.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=3)
    else:
        _ = mod.app.producer_client  # connect before the clock starts
    ready.set()
    if not go.wait(300):
        raise TimeoutError("the parent never said go")
    results = []
    t_first = now()
    for i in range(count):
        r = task.delay()
        if with_results:
            results.append(r)
        counter.value = i + 1
    t_sent = now()
    for i, r in enumerate(results):
        r.get(timeout=result_timeout)
        counter.value = count + i + 1
    t_end = now()
    if framework == "celery":
        for r in results:  # drop stored results (Redis backend keys) once timing is done
            r.forget()
    return {"t_first": t_first, "t_sent": t_sent, "t_end": t_end, "count": count}


SYNC_ROLES = {"produce_tasks": produce_tasks}
