"""A real brokerd with ``--store postgresql://...`` on the session's own
PostgreSQL: what clients publish with confirms is consumed, survives a
graceful restart and a kill -9 as on SQLite, and a database brokerd cannot
use stops it at start with one line that never shows the password."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from pgcluster import Cluster, free_port

import brokerd_client

BOUND = 30.0


async def _take(url: str, queue: str, n: int, *, ack: bool) -> list[int]:
    got: list[int] = []
    async with await brokerd_client.connect(url) as client:
        consumer = await client.consume(queue, prefetch=200)
        while len(got) < n:
            d = await asyncio.wait_for(consumer.__anext__(), timeout=BOUND)
            got.append(int(d.body))
            if ack:
                await d.ack()
        await consumer.cancel()
    return got


async def _publish(url: str, queue: str, n: int) -> None:
    async with await brokerd_client.connect(url) as client:
        await client.declare_queue(queue, durable=True)
        confirms = await asyncio.gather(
            *(client.publish("", queue, str(i).encode()) for i in range(n))
        )
        assert all(c is True for c in confirms)


async def test_confirmed_publishes_are_consumed_and_survive_a_kill9(pg_broker) -> None:  # type: ignore[no-untyped-def]
    """Every confirmed message not acked comes back after kill -9. Acks are
    committed without a durability promise, so one acked just before the
    kill may come back too (at-least-once); nothing else may."""
    await _publish(pg_broker.url, "jobs", 500)
    first = await _take(pg_broker.url, "jobs", 200, ack=True)
    assert first == list(range(200))  # in publish order
    pg_broker.restart()  # kill -9, then start on the same database
    async with await brokerd_client.connect(pg_broker.url) as client:
        stats = await client.queue_stats("jobs")
        assert stats.leased == 0 and 300 <= stats.ready <= 500
    rest = await _take(pg_broker.url, "jobs", stats.ready, ack=True)
    assert set(range(200, 500)) <= set(rest) <= set(range(500))
    assert len(rest) == len(set(rest))


async def test_acks_stick_across_a_graceful_restart(pg_broker) -> None:  # type: ignore[no-untyped-def]
    await _publish(pg_broker.url, "jobs", 300)
    assert await _take(pg_broker.url, "jobs", 100, ack=True) == list(range(100))
    pg_broker.restart(hard=False)  # SIGTERM: in-flight commits finish first
    async with await brokerd_client.connect(pg_broker.url) as client:
        stats = await client.queue_stats("jobs")
        assert (stats.ready, stats.leased) == (200, 0)
    assert await _take(pg_broker.url, "jobs", 200, ack=True) == list(range(100, 300))


async def test_delayed_and_leased_messages_survive_a_graceful_restart(pg_broker) -> None:  # type: ignore[no-untyped-def]
    async with await brokerd_client.connect(pg_broker.url) as client:
        await client.declare_queue("later", durable=True)
        assert await client.publish("", "later", b"1", delay=0.5) is True
        assert await client.publish("", "later", b"2") is True
    held = await _take(pg_broker.url, "later", 1, ack=False)  # leased, never acked
    assert held == [2]
    pg_broker.restart(hard=False)
    await asyncio.sleep(0.6)  # past the delay: due by now, or at the latest after the restart
    got = await _take(pg_broker.url, "later", 2, ack=True)
    assert sorted(got) == [1, 2]


def _run(*store_args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "brokerd",
        "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
        "--data-dir", str(data_dir), *store_args,
    ]  # fmt: skip
    try:
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail("brokerd started instead of refusing the store")


def _one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("brokerd: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_an_unreachable_database_stops_the_start_in_one_line_without_the_password(
    tmp_path: Path,
) -> None:
    url = f"postgresql://app:pw-do-not-log@127.0.0.1:{free_port()}/brokerd"
    result = _run("--store", url, data_dir=tmp_path)
    line = _one_line(result, 1)
    assert "cannot reach the database server" in line
    assert "pw-do-not-log" not in result.stderr + result.stdout
    assert "postgresql://app:***@127.0.0.1:" in line


def test_a_missing_database_stops_the_start_saying_to_create_it(
    postgres: Cluster, tmp_path: Path
) -> None:
    line = _one_line(_run("--store", postgres.url("absent_db"), data_dir=tmp_path), 1)
    assert "the database does not exist" in line and "createdb" in line


def test_an_invalid_store_url_is_a_configuration_error(tmp_path: Path) -> None:
    line = _one_line(_run("--store", "postgresql://u:pw-x@h:5432", data_dir=tmp_path), 2)
    assert "names no database" in line and "pw-x" not in line
