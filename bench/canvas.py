"""A chain and a chord: time to the last result, brokerd beside Celery on RabbitMQ and Redis.

    python -m bench.canvas [--chain 100] [--chord 1000] [--runs 3] [--concurrency 4]

Each system gets one worker process (``--concurrency`` each) with the same two
tasks (bench/systems/canvas_*_app.py), and the producer times, from
``apply_async`` to ``get()`` returning:

* a chain of ``--chain`` tasks, each adding one to the previous result;
* a chord of ``--chord`` noop header tasks whose body sums their results.

Systems: the native SDK on brokerd (``brokerd_client.tasks`` canvas, a
brokerd-worker); the same unchanged Celery app on brokerd (kombu transport and
result backend ``brokerd://``), on RabbitMQ (results in Redis, since RabbitMQ's
``rpc://`` backend cannot run chords) and on Redis (broker and results). It
measures and checks each result's value; it asserts nothing else. Peers that
are not reachable are skipped with a reason.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .procs import BrokerdProcess

BOUND = 300.0
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
REDIS = "redis://127.0.0.1:6379/0"
#: (run a chain of n, run a chord of n, the producer app to close).
Runs = tuple[Callable[[int], int], Callable[[int], int], Any]


def _reachable(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
        return True
    return False


def _wait_ready(ready_dir: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + BOUND
    while not any(ready_dir.iterdir()):
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the worker")
        time.sleep(0.05)


def _worker(
    system: str, broker: str, backend: str, queue: str, args: argparse.Namespace, work: Path
) -> subprocess.Popen[bytes]:
    ready_dir = work / f"{system}.ready"
    ready_dir.mkdir()
    env = {
        **os.environ,
        "CV_BROKER": broker,
        "CV_BACKEND": backend,
        "CV_QUEUE": queue,
        "CV_READY_DIR": str(ready_dir),
    }
    if system == "native":
        cmd = [
            sys.executable,
            "-m",
            "brokerd_client.worker",
            "-A",
            "bench.systems.canvas_native_app",
            "-b",
            broker,
            "-Q",
            queue,
            "-c",
            str(args.concurrency),
            "--without-banner",
            "--ready-file",
            str(ready_dir / "worker.ready"),
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.systems.canvas_celery_app",
            "worker",
            "-P",
            args.celery_pool,
            "-c",
            str(args.concurrency),
            "-Q",
            queue,
            "-n",
            f"cv-{queue}@%h",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "WARNING",
        ]
    with (work / f"{system}.worker.log").open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(ready_dir, proc)
    except BaseException:
        _stop(proc)
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _celery_runs(broker: str, backend: str, queue: str) -> Runs:
    from celery import Celery, chain, chord

    if broker.startswith("brokerd"):
        import brokerd_client.celery  # noqa: F401

    app = Celery("bench_canvas_producer", broker=broker, backend=backend)
    app.conf.update(
        task_default_queue=queue,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
    )

    def sig(name: str, *a: Any) -> Any:
        return app.signature(name, args=a, queue=queue)

    def run_chain(n: int) -> int:
        flow = chain(sig("bench.cv_inc", 0), *[sig("bench.cv_inc") for _ in range(n - 1)])
        return int(flow.apply_async().get(timeout=BOUND))

    def run_chord(n: int) -> int:
        flow = chord([sig("bench.cv_inc", i) for i in range(n)], sig("bench.cv_sum"))
        return int(flow.apply_async().get(timeout=BOUND))

    return run_chain, run_chord, app


def _native_runs(broker: str, queue: str) -> Runs:
    from brokerd_client import tasks

    app = tasks.App("bench_canvas_producer", broker=broker)
    app.conf.update(task_default_queue=queue)
    chain: Any = getattr(tasks, "chain", None)
    chord: Any = getattr(tasks, "chord", None)
    if chain is None or chord is None:
        app.close()
        raise LookupError("this build's native SDK has no canvas (chain/chord)")

    def sig(name: str, *a: Any) -> Any:
        return app.signature(name, args=a, queue=queue)

    def run_chain(n: int) -> int:
        flow = chain(sig("bench.cv_inc", 0), *[sig("bench.cv_inc") for _ in range(n - 1)])
        return int(flow.apply_async().get(timeout=BOUND))

    def run_chord(n: int) -> int:
        flow = chord([sig("bench.cv_inc", i) for i in range(n)], sig("bench.cv_sum"))
        return int(flow.apply_async().get(timeout=BOUND))

    return run_chain, run_chord, app


def run_system(
    system: str, broker: str, backend: str, args: argparse.Namespace, work: Path
) -> dict[str, list[float]]:
    queue = f"bench-cv-{uuid.uuid4().hex[:8]}"
    if system == "native":
        run_chain, run_chord, app = _native_runs(broker, queue)
    else:
        run_chain, run_chord, app = _celery_runs(broker, backend, queue)
    proc = _worker(system, broker, backend, queue, args, work)
    times: dict[str, list[float]] = {"chain": [], "chord": []}
    try:
        if run_chain(3) != 3:  # warm up: connections, queues, the pool's processes
            raise RuntimeError("a chain of 3 did not return 3")
        for _ in range(args.runs):
            started = time.perf_counter()
            got = run_chain(args.chain)
            times["chain"].append(time.perf_counter() - started)
            if got != args.chain:
                raise RuntimeError(f"the chain returned {got}, not {args.chain}")
            started = time.perf_counter()
            got = run_chord(args.chord)
            times["chord"].append(time.perf_counter() - started)
            want = sum(range(1, args.chord + 1))
            if got != want:
                raise RuntimeError(f"the chord returned {got}, not {want}")
        return times
    finally:
        _stop(proc)
        with contextlib.suppress(Exception):
            app.close()


def _row(times: dict[str, list[float]], args: argparse.Namespace) -> str:
    def fig(kind: str, n: int) -> str:
        runs = times[kind]
        each = " ".join(f"{t:.2f}" for t in runs)
        return f"{kind} of {n}: median {statistics.median(runs):.2f} s ({each})"

    return f"{fig('chain', args.chain)}; {fig('chord', args.chord)}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.canvas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--chain", type=int, default=100, help="tasks in the chain")
    p.add_argument("--chord", type=int, default=1000, help="header tasks in the chord")
    p.add_argument("--runs", type=int, default=3, help="timed runs of each per system")
    p.add_argument("--concurrency", type=int, default=4, help="the worker's concurrency")
    p.add_argument("--celery-pool", default="prefork", help="the Celery worker's -P")
    p.add_argument("--systems", default="native,celery+brokerd,celery+rabbitmq,celery+redis")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-canvas-"))
    rows: list[tuple[str, str]] = []
    wanted = args.systems.split(",")
    broker = BrokerdProcess()
    try:
        broker.start()
        for system in ("native", "celery+brokerd"):
            if system in wanted:
                rows.append((system, _attempt(system, broker.url, broker.url, args, work)))
    finally:
        broker.close()
    peers = {
        "celery+rabbitmq": (RABBITMQ, REDIS, (5672, 6379)),
        "celery+redis": (REDIS, REDIS, (6379,)),
    }
    for system, (url, backend, ports) in peers.items():
        if system not in wanted:
            continue
        down = [port for port in ports if not _reachable(port)]
        if down:
            rows.append((system, f"skipped: nothing listening on 127.0.0.1:{down[0]}"))
            continue
        rows.append((system, _attempt(system, url, backend, args, work)))
    print(
        f"one worker -c {args.concurrency} per system, {args.runs} runs; time from "
        "apply_async to the last result"
    )
    for system, row in rows:
        print(f"  {system:<16} {row}")


def _attempt(system: str, broker: str, backend: str, args: argparse.Namespace, work: Path) -> str:
    try:
        return _row(run_system(system, broker, backend, args, work), args)
    except LookupError as exc:
        return f"skipped: {exc}"
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {exc}"


if __name__ == "__main__":
    main()
