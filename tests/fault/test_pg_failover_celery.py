"""Celery on standby nodes: a producer (``send_task``) and a ``celery worker``,
both on the kombu transport with a failover URL (``brokerd://a,b/``), across
kill -9 of the active node. No user code handles the failover: the transport
finds the standby once it took over (rounds over the URL's nodes, then kombu's
own retry), the producer's publish retry sends again, the worker's consumer
reconnects. Every task completes (at least once)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from brokerproc import BrokerProcess
from hakit import failover_url, wait_active, wait_standby
from pgcluster import Cluster, database_for

pytestmark = pytest.mark.fault

pytest.importorskip("celery")

CELERY_TESTS = Path(__file__).resolve().parent.parent / "celery"
CELERY = str(Path(sys.executable).with_name("celery"))
#: Generous bound on every wait (the standby takes over within about 5 s).
BOUND = 90.0


def _ran(runs: Path) -> list[str]:
    if not runs.exists():
        return []
    return [w[1] for w in (line.split() for line in runs.read_text().splitlines()) if w]


def _send(app: Any, tags: range) -> None:
    for i in tags:
        app.send_task("task.record", args=(f"t{i}",))


async def test_celery_producer_and_worker_carry_on_after_kill9_of_the_active_node(
    postgres: Cluster, tmp_path: Path
) -> None:
    store = database_for(str(tmp_path))
    a = BrokerProcess(tmp_path / "a", "--store", store).start()
    b = BrokerProcess(tmp_path / "b", "--store", store).start()
    runs = tmp_path / "runs"
    log = tmp_path / "worker.log"
    worker: subprocess.Popen[bytes] | None = None
    sys.path.insert(0, str(CELERY_TESTS))
    try:
        await wait_active(a)
        await wait_standby(b)
        nodes = failover_url(a, b) + "/"
        env = dict(os.environ)
        env.update(
            BROKERD_TEST_URL=nodes,
            BROKERD_TEST_RUNS=str(runs),
            PYTHONPATH=os.pathsep.join([str(CELERY_TESTS), env.get("PYTHONPATH", "")]),
        )
        with log.open("wb") as out:
            worker = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
                [CELERY, "-A", "proj", "worker", "-P", "solo", "-c", "1", "-Q", "tasks",
                 "-n", "failover@%h", "--loglevel=INFO"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + BOUND
        while " ready." not in log.read_text(errors="replace"):
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)

        from proj.celery import make_app

        app = make_app(nodes)
        try:
            n = 300
            await asyncio.to_thread(_send, app, range(n // 2))
            while len(_ran(runs)) < 50:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                await asyncio.sleep(0.05)
            killed_at = time.monotonic()
            a.kill()
            # Sent while no node is active: each waits in the transport
            # until the standby serves, or in the publish retry.
            await asyncio.to_thread(_send, app, range(n // 2, n))
            sent = time.monotonic() - killed_at
        finally:
            app.close()
        want = {f"t{i}" for i in range(n)}
        while not want <= set(_ran(runs)):
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < killed_at + BOUND, (
                sorted(want - set(_ran(runs)))[:10],
                log.read_text()[-3000:],
            )
            await asyncio.sleep(0.1)
        done = time.monotonic() - killed_at
        ran = _ran(runs)
        print(
            f"\ncelery failover: {n} tasks, all ran, {len(ran) - len(set(ran))} ran twice; "
            f"the last send returned {sent:.2f} s and the last task ran {done:.2f} s "
            "after kill -9"
        )
        assert "took the database's lease" in b.log_path.read_text()
        assert worker.poll() is None, "the worker exited"
    finally:
        sys.path.remove(str(CELERY_TESTS))
        if worker is not None and worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        a.kill()
        b.kill()
