"""W4's shared procedure: noop tasks through ONE worker process, for any task framework.

A framework (Celery on a peer, brokerd's task SDK) supplies an app module exposing ``app``,
``noop_ignored`` (``ignore_result=True``) and ``noop_result``, configured from the
``BENCH_*`` environment below, and the command line of one worker process. The worker
acks after the task ran, with the run's prefetch. Its app records :func:`bench.clock.now`
when it runs its first task and when it has run them all, and writes both to a file.

What is timed is the worker: the queue is first pre-loaded with every task (untimed; each
framework's own producer API, confirmed sends), then one worker process is started and
the rate is tasks / (last task run - first task run). Timing the producer instead would
measure one confirmed send at a time, not the worker. With results, the producer then
checks (untimed) that every result is stored and successful.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..children import Child, collect, kill_all, spawn, wait_ready
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
    check_file = workdir / "check"
    producer = None
    worker: subprocess.Popen[bytes] | None = None
    try:
        # One producer process pre-loads the queue, then (after the worker ran every
        # task) checks the results: Celery's rpc:// backend only answers the process
        # that sent the tasks.
        producer = spawn(
            "producer",
            "sync:produce_tasks",
            ctx.target,
            framework=framework.name,
            app_module=framework.app_module,
            env=env,
            count=count,
            with_results=with_results,
            check_file=str(check_file),
            result_timeout=s.stall_timeout,
        )
        await wait_ready([producer])
        producer.go.set()
        progress = Progress(ctx.title, [Counter("pre-loaded", producer.counter, count)])
        await _wait_preloaded(producer, count, progress, s.stall_timeout)
        worker = _start_worker(
            framework.worker_argv(queue, s.prefetch, ready_file), worker_env, log_path
        )
        deadline = now() + WORKER_START_TIMEOUT + s.stall_timeout + count / 100
        while not done_file.exists():
            if worker.poll() is not None or now() > deadline:
                raise RuntimeError(f"worker did not run all {count} tasks: {_tail(log_path)}")
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.01)
        t_first, t_done = (float(x) for x in done_file.read_text().split())
        check_file.write_text("go")
        checked = (await collect([producer], stall_timeout=s.stall_timeout))["producer"]
        producer = None
        if with_results and checked["succeeded"] != count:
            raise RuntimeError(f"only {checked['succeeded']}/{count} results were stored")
        elapsed = t_done - t_first
        return count / elapsed, {
            "elapsed_s": round(elapsed, 3),
            "preload_s": round(checked["t_sent"] - checked["t_first"], 3),
            "framework": framework.name,
            "results_checked": checked["succeeded"],
        }
    finally:
        if producer is not None:
            kill_all([producer])
        if worker is not None:
            worker.terminate()
            try:
                await asyncio.to_thread(worker.wait, 3)  # the work is done; no need to be gentle
            except subprocess.TimeoutExpired:
                worker.kill()
                await asyncio.to_thread(worker.wait)
        shutil.rmtree(workdir, ignore_errors=True)


async def run_task_latency(
    ctx: RunContext, framework: Framework, env: dict[str, str], *, rate: float, count: int
) -> dict[str, Any]:
    """Latency of tasks sent at a fixed ``rate`` to one idle, started worker.

    Each task carries its send time (the shared monotonic clock); the worker's app
    records when it started running it. Returns the sorted latencies in seconds.
    """
    s = ctx.settings
    queue = env["BENCH_W4_QUEUE"]
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{framework.name}-latency-"))
    ready_file, latency_file, log_path = workdir / "ready", workdir / "latency", workdir / "w.log"
    env = {
        **env,
        "BENCH_W4_PREFETCH": str(s.prefetch),
        "BENCH_W4_EXPECT": str(count),
        "BENCH_W4_READY_FILE": str(ready_file),
        "BENCH_W4C_LATENCY_FILE": str(latency_file),
    }
    worker_env = child_env()
    worker_env.update(env)
    producer = None
    argv = framework.worker_argv(queue, s.prefetch, ready_file)
    worker = _start_worker(argv, worker_env, log_path)
    try:
        deadline = now() + WORKER_START_TIMEOUT
        while not ready_file.exists():
            if worker.poll() is not None or now() > deadline:
                raise RuntimeError(f"worker did not start: {_tail(log_path)}")
            await asyncio.sleep(0.01)
        producer = spawn(
            "producer",
            "sync:paced_tasks",
            ctx.target,
            app_module=framework.app_module,
            env=env,
            rate=rate,
            count=count,
        )
        await wait_ready([producer])
        producer.go.set()
        progress = Progress(ctx.title, [Counter("sent", producer.counter, count)])
        deadline = now() + WORKER_START_TIMEOUT + s.stall_timeout + count / rate
        while not latency_file.exists():
            if worker.poll() is not None or now() > deadline:
                raise RuntimeError(f"worker did not run all {count} tasks: {_tail(log_path)}")
            progress.tick()
            await asyncio.sleep(0.05)
        progress.finish()
        await asyncio.sleep(0.01)
        sent = (await collect([producer], stall_timeout=s.stall_timeout))["producer"]
        producer = None
        latencies = sorted(float(x) for x in latency_file.read_text().split())
        return {"latencies": latencies, "behind_s": sent["behind_s"]}
    finally:
        if producer is not None:
            kill_all([producer])
        worker.terminate()
        try:
            await asyncio.to_thread(worker.wait, 3)
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


async def _wait_preloaded(producer: Child, count: int, progress: Progress, stall: float) -> None:
    """Wait until the producer has sent (and had confirmed) every task."""
    last, since = -1, now()
    while producer.counter.value < count:
        if not producer.process.is_alive():
            raise RuntimeError("the producer died while pre-loading")
        value = producer.counter.value
        if value != last:
            last, since = value, now()
        elif now() - since > stall:
            raise RuntimeError(f"pre-loading stalled at {value}/{count}")
        progress.tick()
        await asyncio.sleep(0.05)
    progress.finish()


#: Tasks per pipelined send when pre-loading brokerd.
PRELOAD_CHUNK = 2_000


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
    check_file: str,
    result_timeout: float,
) -> dict[str, Any]:
    """Producer process body: pre-load the queue with ``count`` tasks, every send
    confirmed by the broker (brokerd pipelines them; Celery sends one at a time);
    then, once the parent writes ``check_file``, check every result (untimed)."""
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
    results: list[Any] = []
    t_first = now()
    if framework == "celery":
        for i in range(count):
            results.append(task.delay())
            counter.value = i + 1
    else:
        for i in range(0, count, PRELOAD_CHUNK):
            n = min(PRELOAD_CHUNK, count - i)
            results.extend(mod.app.send_many([task.s() for _ in range(n)], timeout=120))
            counter.value = i + n
    t_sent = now()
    deadline = now() + 3600
    while not Path(check_file).exists():
        if now() > deadline:
            raise TimeoutError("the parent never asked for the results check")
        time.sleep(0.01)
    succeeded = 0
    if with_results:
        for result in results:
            result.get(timeout=result_timeout)
            succeeded += bool(result.successful())
        if framework == "celery":
            for result in results:
                result.forget()  # drop stored results (Redis backend keys)
    return {"t_first": t_first, "t_sent": t_sent, "count": count, "succeeded": succeeded}


def paced_tasks(
    *,
    counter: Any,
    ready: Any,
    go: Any,
    app_module: str,
    env: dict[str, str],
    rate: float,
    count: int,
) -> dict[str, Any]:
    """Producer process body: send ``count`` latency tasks on an absolute schedule of
    ``rate`` per second, each carrying its send time; report how far behind it ran."""
    os.environ.update(env)
    mod = importlib.import_module(app_module)
    with mod.app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
    mod.noop_latency.delay(-1.0e9)  # warm the producer's connection and channel (not counted)
    ready.set()
    if not go.wait(300):
        raise TimeoutError("the parent never said go")
    start, behind = now(), 0.0
    for i in range(count):
        due = start + i / rate
        wait = due - now()
        if wait > 0:
            time.sleep(wait)
        else:
            behind = max(behind, -wait)
        mod.noop_latency.delay(now())
        counter.value = i + 1
    return {"behind_s": behind}


SYNC_ROLES = {"produce_tasks": produce_tasks, "paced_tasks": paced_tasks}
