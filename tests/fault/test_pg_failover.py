"""Standby nodes on PostgreSQL: kill -9 the active node under confirmed
publishing and consuming; the standby takes over and nothing confirmed is
lost. Clients use a failover URL (``brokerd://a,b``). Counts what was lost
and duplicated (duplicates are allowed: at-least-once) and prints the
measured times; only generous bounds are asserted."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from brokerproc import BrokerProcess
from hakit import failover_url, wait_active, wait_standby
from pgcluster import Cluster, database_for

import brokerd_client
from brokerd_client import AsyncClient
from brokerd_client.tasks.testing import WorkerHandle

pytestmark = pytest.mark.fault

WINDOW = 100
#: Generous: the standby takes over within about 5 s (measured and printed).
RESUME_BOUND = 30.0
#: Tasks sent just before the kill, due this many seconds later.
MARKERS = 10
MARKER_DELAY = 1.0


class Counts:
    def __init__(self) -> None:
        self.confirmed: set[int] = set()
        self.received: list[int] = []
        #: When the consumer got its first delivery on a recovered connection.
        self.resumed_at: float | None = None


async def _publisher(client: AsyncClient, counts: Counts, stop: asyncio.Event) -> None:
    """Windows of confirmed publishes. No reconnect code: the client recovers
    by itself, republishing what the dead node had not confirmed, so every
    publish returns True (anything raised fails the test)."""
    next_id = 0
    while not stop.is_set():
        ids = range(next_id, next_id + WINDOW)
        next_id += WINDOW
        results = await asyncio.gather(*(client.publish("", "ha", str(i).encode()) for i in ids))
        assert results == [True] * WINDOW, results
        counts.confirmed.update(ids)
        await asyncio.sleep(0.01)


async def _consumer(client: AsyncClient, counts: Counts) -> None:
    """One ``async for`` across the failover: the client consumes again on
    the standby and the iteration goes on (anything raised fails the test)."""
    consumer = await client.consume("ha", prefetch=200)
    async for d in consumer:
        counts.received.append(int(d.body))
        if counts.resumed_at is None and client.recoveries:
            counts.resumed_at = time.monotonic()
        d.ack_nowait()


async def test_kill9_of_the_active_node_loses_nothing_confirmed_and_clients_resume_on_the_standby(
    postgres: Cluster, tmp_path: Path
) -> None:
    url = database_for(str(tmp_path))
    a = BrokerProcess(tmp_path / "a", "--store", url).start()
    b = BrokerProcess(tmp_path / "b", "--store", url).start()
    try:
        await wait_active(a)
        await wait_standby(b)
        nodes = failover_url(a, b)
        publishing = await brokerd_client.connect(nodes)
        consuming = await brokerd_client.connect(nodes)
        await publishing.declare_queue("ha", durable=True)
        counts = Counts()
        stop = asyncio.Event()
        tasks = [
            asyncio.ensure_future(_publisher(publishing, counts, stop)),
            asyncio.ensure_future(_consumer(consuming, counts)),
        ]
        while len(counts.received) < 2000:
            await asyncio.sleep(0.05)
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
        killed_at = time.monotonic()
        a.kill()
        seen = len(counts.received)
        while len(counts.received) < seen + 2000 or counts.resumed_at is None:
            await asyncio.sleep(0.05)
            assert time.monotonic() - killed_at < RESUME_BOUND + 30
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
        resumed = counts.resumed_at - killed_at
        stop.set()
        # The publisher ends after its window; the consumer may be waiting on
        # an empty queue, so it is cancelled and its client closed (returning
        # its leased messages to ready for the drain below).
        await asyncio.wait_for(tasks[0], 60)
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)
        recoveries = (publishing.recoveries, consuming.recoveries)
        await publishing.close()
        await consuming.close()
        # Drain until every confirmed message came, then what else is ready.
        async with await brokerd_client.connect(nodes) as client:
            consumer = await client.consume("ha", prefetch=500)
            while (
                not counts.confirmed <= set(counts.received)
                or (await client.queue_stats("ha")).ready
            ):
                d = await asyncio.wait_for(consumer.__anext__(), 30)
                counts.received.append(int(d.body))
                await d.ack()
        lost = counts.confirmed - set(counts.received)
        duplicated = len(counts.received) - len(set(counts.received))
        print(
            f"\nfailover: {len(counts.confirmed)} confirmed, {len(lost)} lost, "
            f"{duplicated} duplicated; first delivery from the standby {resumed:.2f} s "
            f"after kill -9; recoveries (publisher, consumer) {recoveries}"
        )
        assert not lost, f"confirmed messages lost: {sorted(lost)[:20]}"
        assert recoveries == (1, 1)
        assert resumed < RESUME_BOUND
        assert "took the database's lease" in b.log_path.read_text()
    finally:
        a.kill()
        b.kill()


APP = """
import os, time
from brokerd_client.tasks import App

app = App("ha", broker=os.environ["BROKERD_URL"])

@app.task(ignore_result=True)
def record(i):
    time.sleep(0.01)
    with open(os.environ["HA_RECORD"], "a") as f:
        f.write(f"{i} {time.monotonic()}\\n")
"""


async def test_a_worker_resumes_on_the_standby_after_kill9_without_user_code(
    postgres: Cluster, tmp_path: Path
) -> None:
    url = database_for(str(tmp_path))
    a = BrokerProcess(tmp_path / "a", "--store", url).start()
    b = BrokerProcess(tmp_path / "b", "--store", url).start()
    record = tmp_path / "record.txt"
    worker: WorkerHandle | None = None
    try:
        await wait_active(a)
        await wait_standby(b)
        nodes = failover_url(a, b)
        (tmp_path / "haapp.py").write_text(APP)
        env = {"PYTHONPATH": str(tmp_path), "BROKERD_URL": nodes, "HA_RECORD": str(record)}
        os.environ.update({"HA_RECORD": str(record)})
        worker = WorkerHandle(
            "haapp", nodes, "-P", "threads", "-c", "4", workdir=tmp_path, env=env
        ).wait_ready()
        n = 1500
        async with await brokerd_client.connect(nodes) as client:
            # The app's own messages, sent the way .delay() sends them.
            import sys

            sys.path.insert(0, str(tmp_path))
            os.environ["BROKERD_URL"] = nodes
            import haapp  # type: ignore[import-not-found]

            for i in range(n):
                haapp.record.delay(i)
            del client

        def done() -> list[tuple[int, float]]:
            if not record.exists():
                return []
            rows = [line.split() for line in record.read_text().splitlines() if line.strip()]
            return [(int(i), float(t)) for i, t in rows if t]

        while len(done()) < 300:
            assert worker.proc.poll() is None, worker.log[-3000:]
            await asyncio.sleep(0.05)
        # Markers only the standby can deliver: held by the broker until 1 s
        # after the kill below, so none runs before the standby took over
        # (tasks the worker had already received go on running after the
        # kill: they say nothing about resuming).
        for i in range(n, n + MARKERS):
            haapp.record.apply_async((i,), countdown=MARKER_DELAY)
        haapp.app.clients.close()
        killed_at = time.monotonic()
        a.kill()
        deadline = killed_at + RESUME_BOUND + 60
        while len({i for i, _ in done()}) < n + MARKERS:
            assert time.monotonic() < deadline, (worker.log[-3000:], len(done()))
            await asyncio.sleep(0.1)
        rows = done()
        ids = [i for i, _ in rows if i < n]
        resumed = min(t for i, t in rows if i >= n) - killed_at
        print(
            f"\nworker failover: {n} tasks, {n - len(set(ids))} not run, "
            f"{len(ids) - len(set(ids))} run twice; worker resumed on the standby "
            f"{resumed:.2f} s after kill -9 (markers due {MARKER_DELAY:g} s after it)"
        )
        assert set(ids) == set(range(n))
        assert resumed < RESUME_BOUND
        assert worker.proc.poll() is None, "the worker exited"
    finally:
        if worker is not None:
            worker.kill()
        a.kill()
        b.kill()
