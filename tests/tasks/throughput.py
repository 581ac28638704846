"""Noop task throughput through ONE worker process (not a test: a measurement).

    python tests/tasks/throughput.py [--tasks 10000] [--task e2e.noop] [worker args...]

Starts brokerd (durable SQLite, temp dir) and fills a durable queue with
``--tasks`` messages, then starts one ``brokerd-worker`` process and times
from its first delivery until the queue is empty (every message acked; with
results stored, an ack happens only after its result is committed).
Worker start-up (imports, connect) is not counted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "apps"))

from brokerproc import BrokerProcess  # noqa: E402

import brokerd_client  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--task", default="e2e.noop")
    args, worker_args = p.parse_known_args()
    tmp = Path(tempfile.mkdtemp(prefix="brokerd-bench-"))
    broker = BrokerProcess(tmp / "data").start()
    os.environ["BROKERD_URL"] = broker.url
    worker = None
    try:
        import e2eapp

        sigs = [e2eapp.app.signature(args.task) for _ in range(args.tasks)]
        t0 = time.perf_counter()
        for i in range(0, len(sigs), 5000):
            e2eapp.app.send_many(sigs[i : i + 5000], timeout=120)
        publish_s = time.perf_counter() - t0
        stats = brokerd_client.Client(broker.url)
        info = stats.queue_stats("default")
        assert info.ready == args.tasks, info
        env = dict(os.environ, PYTHONPATH=str(HERE / "apps"))
        worker = subprocess.Popen(
            [sys.executable, "-m", "brokerd_client.worker", "-A", "e2eapp", "-Q", "default",
             "--without-banner", "-l", "warning", *worker_args],
            env=env,
        )  # fmt: skip
        while stats.queue_stats("default").ready == args.tasks:
            time.sleep(0.001)
        start = time.perf_counter()
        while True:
            info = stats.queue_stats("default")
            if info.ready == 0 and info.leased == 0:
                break
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
        print(
            f"{args.tasks} x {args.task} ({' '.join(worker_args) or 'defaults'}): "
            f"{elapsed:.3f} s = {args.tasks / elapsed:,.0f} tasks/s "
            f"(publishing them took {publish_s:.2f} s = {args.tasks / publish_s:,.0f}/s)"
        )
        stats.close()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        broker.kill()


if __name__ == "__main__":
    main()
