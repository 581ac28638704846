"""A task rate limit shared by two workers: brokerd beside Celery on RabbitMQ and Redis.

    python -m bench.ratelimit [--rate 20] [--tasks 100] [--workers 2] [--concurrency 4]

Each system runs the same task with ``rate_limit="<rate>/s"`` in ``--workers``
worker processes of ``--concurrency`` each, is sent ``--tasks`` tasks at once,
and the script reads the start time every run wrote. It prints the starts
per second achieved over the run and the most starts in any one second.

Celery keeps a rate limit in each worker, so N workers let through about N
times the limit; brokerd's broker keeps one schedule per task for the whole
fleet (docs/tasks.md, Rate limits). It measures; it asserts nothing. The
peers are skipped with a reason when they are not reachable.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from .procs import BrokerdProcess

BOUND = 120.0
PEERS = {
    "celery+rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", 5672),
    "celery+redis": ("redis://127.0.0.1:6379/0", 6379),
}


def _reachable(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
        return True
    return False


def _starts(log: Path) -> list[tuple[float, int]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        stamp, _, pid = line.partition(" ")
        out.append((float(stamp), int(pid)))
    return sorted(out)


def _wait(what: str, probe: Any, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + BOUND
    while not probe():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a worker exited with {p.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _figures(starts: list[tuple[float, int]]) -> dict[str, float]:
    times = [t for t, _ in starts]
    span = times[-1] - times[0]
    busiest = max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))
    return {
        "achieved_per_s": (len(times) - 1) / span if span > 0 else float("inf"),
        "busiest_second": busiest,
        "workers_used": len({pid for _, pid in starts}),
    }


def run_system(system: str, url: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    log = work / f"{system}.log"
    ready_dir = work / f"{system}.ready"
    ready_dir.mkdir()
    queue = f"bench-rl-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "RL_BROKER": url,
        "RL_QUEUE": queue,
        "RL_LOG": str(log),
        "RL_RATE": f"{args.rate:g}/s",
        "RL_READY_DIR": str(ready_dir),
    }
    procs: list[subprocess.Popen[bytes]] = []
    with (work / f"{system}.workers.log").open("ab") as out:
        for i in range(args.workers):
            if system == "brokerd":
                cmd = [
                    sys.executable, "-m", "brokerd_client.worker",
                    "-A", "bench.systems.rl_native_app", "-b", url, "-Q", queue,
                    "-c", str(args.concurrency), "--without-banner",
                    "--ready-file", str(ready_dir / f"{i}.ready"),
                ]  # fmt: skip
            else:
                cmd = [
                    sys.executable, "-m", "celery", "-A", "bench.systems.rl_celery_app",
                    "worker", "-P", "prefork", "-c", str(args.concurrency), "-Q", queue,
                    "-n", f"rl{i}-{queue}@%h", "--without-gossip", "--without-mingle",
                    "-l", "WARNING",
                ]  # fmt: skip
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
    try:
        _wait("workers", lambda: len(list(ready_dir.iterdir())) >= args.workers, procs)
        _send(system, url, queue, args.tasks)
        _wait(f"{args.tasks} task starts", lambda: len(_starts(log)) >= args.tasks, procs)
        return _figures(_starts(log))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def _send(system: str, url: str, queue: str, count: int) -> None:
    """Send ``count`` tasks from a producer app of its own (fresh connections)."""
    if system == "brokerd":
        from brokerd_client.tasks import App

        native = App("bench_rl_producer", broker=url)
        try:
            for i in range(count):
                native.send_task("bench.rl_tick", args=(i,), queue=queue)
        finally:
            native.close()
        return
    from celery import Celery

    producer = Celery("bench_rl_producer", broker=url)
    try:
        for i in range(count):
            producer.send_task("bench.rl_tick", args=(i,), queue=queue)
    finally:
        producer.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ratelimit", description=__doc__)
    p.add_argument("--rate", type=float, default=20.0, help="the task's limit per second")
    p.add_argument("--tasks", type=int, default=100, help="tasks sent at once")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--concurrency", type=int, default=4, help="tasks each worker runs at once")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    rows: list[tuple[str, str]] = []
    broker = BrokerdProcess()
    try:
        broker.start()
        figures = run_system("brokerd", broker.url, args, work)
        rows.append(("brokerd", _row(figures)))
    finally:
        broker.close()
    for system, (url, port) in PEERS.items():
        if not _reachable(port):
            rows.append((system, f"skipped: nothing listening on 127.0.0.1:{port}"))
            continue
        try:
            rows.append((system, _row(run_system(system, url, args, work))))
        except Exception as exc:
            rows.append((system, f"failed: {exc}"))
    print(
        f"rate_limit={args.rate:g}/s, {args.workers} workers x -c {args.concurrency}, "
        f"{args.tasks} tasks sent at once"
    )
    for system, row in rows:
        print(f"  {system:<16} {row}")


def _row(f: dict[str, float]) -> str:
    return (
        f"{f['achieved_per_s']:.1f} starts/s over the run, at most {f['busiest_second']:.0f} "
        f"in one second, {f['workers_used']:.0f} processes ran tasks"
    )


if __name__ == "__main__":
    main()
