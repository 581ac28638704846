"""Fencing on PostgreSQL: a brokerd paused past its lease (SIGSTOP) while
another node took the database over must, once resumed (SIGCONT), commit
nothing and step down (exit status 3), closing its clients. Nothing it
confirmed before the pause is lost; nothing is confirmed after it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest
from brokerproc import BrokerProcess
from hakit import wait_active
from pgcluster import Cluster, database_for

import brokerd_client
from brokerd_client.errors import BrokerError, ConnectionLost

pytestmark = pytest.mark.fault


async def _publish(url: str, start: int, n: int) -> None:
    async with await brokerd_client.connect(url) as client:
        await client.declare_queue("q", durable=True)
        results = await asyncio.gather(
            *(client.publish("", "q", str(i).encode()) for i in range(start, start + n))
        )
        assert all(r is True for r in results)


async def test_a_node_paused_past_its_lease_commits_nothing_and_steps_down(
    postgres: Cluster, tmp_path: Path
) -> None:
    url = database_for(str(tmp_path))
    first = BrokerProcess(tmp_path / "a", "--store", url).start()
    second = BrokerProcess(tmp_path / "b", "--store", url)
    try:
        await _publish(first.url, 0, 50)
        stale = await brokerd_client.connect(first.url)
        os.kill(first.pid, signal.SIGSTOP)
        second.start()  # stands by until the paused node's lease runs out, then takes over
        await wait_active(second)
        await _publish(second.url, 50, 50)
        os.kill(first.pid, signal.SIGCONT)
        outcome: object
        try:
            outcome = await asyncio.wait_for(stale.publish("", "q", b"after"), timeout=30)
        except (BrokerError, ConnectionLost, OSError) as exc:
            outcome = exc
        assert outcome is not True, "a fenced node confirmed a publish"
        with contextlib.suppress(Exception):
            await stale.close()
        assert first.proc is not None
        assert first.proc.wait(timeout=30) == 3
        assert "stepping down" in first.log_path.read_text()
        async with await brokerd_client.connect(second.url) as client:
            stats = await client.queue_stats("q")
            consumer = await client.consume("q", prefetch=200)
            got: list[bytes] = []
            while len(got) < stats.ready:
                d = await asyncio.wait_for(consumer.__anext__(), timeout=30)
                got.append(d.body)
                await d.ack()
        assert b"after" not in got
        assert sorted(int(b) for b in got) == list(range(100))
    finally:
        with contextlib.suppress(ProcessLookupError, TypeError, RuntimeError):
            os.kill(first.pid, signal.SIGCONT)
        first.kill()
        second.kill()
