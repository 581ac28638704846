"""W4 on PostgreSQL: brokerd's PostgreSQL store beside procrastinate, and brokerd on SQLite.

    python tests/pgcluster.py            # prints a URL of a private PostgreSQL (or use your own)
    python -m bench.pgtasks --store postgresql://brokerd@127.0.0.1:55432/postgres [--tasks 10000]

All three run W4's procedure (bench/systems/task_runs.py): the queue is pre-loaded
with ``--tasks`` noop tasks (untimed), then ONE worker process with concurrency
``--concurrency`` runs them, and the rate is tasks / (last run - first run).

* brokerd on SQLite and on PostgreSQL: ``python -m bench --workloads W4`` (results
  ignored), the second with ``--brokerd-store``, run as subprocesses.
* procrastinate: its own tables in a fresh database on the same server, jobs
  deferred in batches of 1,000, one ``procrastinate worker -c N`` (async task,
  LISTEN/NOTIFY on). procrastinate stores no return values, so the comparison is
  with W4's "results ignored" row.

The role in ``--store`` needs CREATEDB: every system gets a database of its own,
dropped afterwards. It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from .procs import REPO_ROOT, child_env

BOUND = 600.0


def _admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def _preload(db: str, queue: str, count: int) -> None:
    # The worker's own app module, so producer and worker share one task
    # definition; it reads its database and queue from the environment.
    os.environ["BENCH_PROCRASTINATE_DB"] = db
    os.environ["BENCH_W4_QUEUE"] = queue
    module = importlib.import_module("bench.systems.procrastinate_app")
    async with module.app.open_async():
        await module.app.schema_manager.apply_schema_async()
        left = count
        while left:
            n = min(left, 1000)
            await module.noop.batch_defer_async(*({} for _ in range(n)))
            left -= n


def run_procrastinate(server: str, args: argparse.Namespace) -> float:
    name = f"bench_procrastinate_{os.getpid()}"
    db = _with_database(server, name)
    _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(server, f'CREATE DATABASE "{name}"')
    work = Path(tempfile.mkdtemp(prefix="bench-procrastinate-"))
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    done = work / "done"
    worker: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(_preload(db, queue, args.tasks))
        env = child_env()
        env.update(
            {
                "BENCH_PROCRASTINATE_DB": db,
                "BENCH_W4_QUEUE": queue,
                "BENCH_W4_EXPECT": str(args.tasks),
                "BENCH_W4_DONE_FILE": str(done),
            }
        )
        argv = [
            sys.executable,
            "-m",
            "procrastinate",
            "-a",
            "bench.systems.procrastinate_app.app",
            "worker",
            "-q",
            queue,
            "-c",
            str(args.concurrency),
        ]
        with (work / "worker.log").open("wb") as log:
            worker = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + BOUND
        while not done.exists():
            if worker.poll() is not None or time.monotonic() > deadline:
                tail = (work / "worker.log").read_text()[-2000:]
                raise RuntimeError(f"procrastinate did not run all {args.tasks} jobs: {tail}")
            time.sleep(0.01)
        time.sleep(0.01)
        first, last = (float(x) for x in done.read_text().split())
        return args.tasks / (last - first)
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                worker.kill()
        shutil.rmtree(work, ignore_errors=True)
        _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_brokerd_w4(store: str | None, args: argparse.Namespace) -> float:
    out = Path(tempfile.mkdtemp(prefix="bench-pgtasks-"))
    argv = [
        sys.executable,
        "-m",
        "bench",
        "--workloads",
        "W4",
        "--systems",
        "brokerd",
        "--tasks",
        str(args.tasks),
        "--no-chart",
        "--out",
        str(out),
    ]
    if store is not None:
        argv += ["--brokerd-store", store]
    try:
        done = subprocess.run(
            argv,
            check=False,
            cwd=REPO_ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=BOUND,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    found = re.search(r"W4 noop tasks, results ignored \(tasks/s\)\s+([\d,]+)/s", done.stdout)
    if found is None:
        raise RuntimeError(f"no W4 figure in the bench's output: {done.stdout[-1500:]}")
    return float(found.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.pgtasks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--store", required=True, help="postgresql://user@host:port/db (CREATEDB)")
    p.add_argument("--tasks", type=int, default=10_000, help="noop tasks per system")
    p.add_argument("--concurrency", type=int, default=16, help="procrastinate worker -c")
    args = p.parse_args(argv)
    rows: list[tuple[str, str]] = []
    for label, run in (
        ("brokerd on SQLite", lambda: run_brokerd_w4(None, args)),
        ("brokerd on PostgreSQL", lambda: run_brokerd_w4(args.store, args)),
        ("procrastinate", lambda: run_procrastinate(args.store, args)),
    ):
        try:
            rows.append((label, f"{run():,.0f} tasks/s"))
        except Exception as exc:
            rows.append((label, f"failed: {type(exc).__name__}: {exc}"))
    print(f"W4 noop tasks, results ignored, {args.tasks:,} tasks through one worker process")
    for label, row in rows:
        print(f"  {label:<24} {row}")


if __name__ == "__main__":
    main()
