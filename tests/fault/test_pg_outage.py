"""The database going away: PostgreSQL restarts (and crashes) under
confirmed publishing. brokerd holds publishers with flow control and
resumes on its own; every publish is confirmed in the end (none fails for
the outage) and every confirmed message is there afterwards. A cluster of
this test's own, since it is stopped and killed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from brokerproc import BrokerProcess
from hakit import wait_log
from pgcluster import Cluster, cluster_or_skip

import brokerd_client

pytestmark = pytest.mark.fault

WINDOW = 100


@pytest.fixture
def own_postgres() -> Iterator[Cluster]:
    """Skips without server binaries, as the session's cluster does."""
    with cluster_or_skip() as cluster:
        yield cluster


async def _publish(
    url: str, confirmed: set[int], failures: list[BaseException], stop: asyncio.Event
) -> None:
    async with await brokerd_client.connect(url, heartbeat=0) as client:
        await client.declare_queue("outage", durable=True)
        next_id = 0
        while not stop.is_set():
            ids = range(next_id, next_id + WINDOW)
            next_id += WINDOW
            results = await asyncio.gather(
                *(client.publish("", "outage", str(i).encode()) for i in ids),
                return_exceptions=True,
            )
            for i, result in zip(ids, results, strict=True):
                if result is True:
                    confirmed.add(i)
                else:
                    failures.append(result)  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["restart", "crash"])
async def test_a_postgresql_restart_holds_publishers_then_resumes_losing_nothing(
    own_postgres: Cluster, tmp_path: Path, how: str
) -> None:
    broker = BrokerProcess(tmp_path / "b", "--store", own_postgres.url()).start()
    try:
        confirmed: set[int] = set()
        failures: list[BaseException] = []
        stop = asyncio.Event()
        task = asyncio.ensure_future(_publish(broker.url, confirmed, failures, stop))
        while len(confirmed) < 2000:
            assert not task.done(), task.exception()
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        before = len(confirmed)
        down_at = time.monotonic()
        if how == "crash":
            own_postgres.kill()
        else:
            await loop.run_in_executor(None, own_postgres.stop, "fast")
        await wait_log(broker, "PostgreSQL is unavailable")
        await asyncio.sleep(2.0)
        held = len(confirmed)
        await loop.run_in_executor(None, own_postgres.start)
        up_at = time.monotonic()
        await wait_log(broker, "PostgreSQL is back")
        while len(confirmed) < held + 2000:
            assert not task.done(), task.exception()
            assert time.monotonic() - up_at < 60, "publishing did not resume"
            await asyncio.sleep(0.05)
        resumed = time.monotonic() - up_at
        stop.set()
        await asyncio.wait_for(task, 60)
        assert broker.proc is not None and broker.proc.poll() is None
        async with await brokerd_client.connect(broker.url) as client:
            stats = await client.queue_stats("outage")
            consumer = await client.consume("outage", prefetch=1000)
            got: list[int] = []
            while len(got) < stats.ready:
                d = await asyncio.wait_for(consumer.__anext__(), 30)
                got.append(int(d.body))
                d.ack_nowait()
        lost = confirmed - set(got)
        print(
            f"\n{how}: {len(confirmed)} confirmed ({before} before the outage, "
            f"{held - before} confirmed while it began), {len(lost)} lost, "
            f"{len(got) - len(set(got))} duplicated, {len(failures)} publishes failed; "
            f"outage {up_at - down_at:.1f} s, publishing resumed "
            f"{resumed:.2f} s after the server was up"
        )
        assert not failures, failures[:3]
        assert not lost
        log = broker.log_path.read_text()
        assert "holding publishers" in log and "resuming publishers" in log
    finally:
        with contextlib.suppress(Exception):
            broker.kill()
