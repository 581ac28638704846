"""``--memory-limit`` on a real brokerd: durable backlogs of big bodies keep at
most the budget in memory (read from the metrics endpoint, before and after a
restart) and still drain exactly once, in order; a transient queue at the
limit refuses publishes with QueueFull and keeps what it accepted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from clientkit import BOUND, connect, wait_stats
from test_core_metrics import free_port, get, parse

from brokerd_client import AsyncClient, QueueFull

KIB = 1024
LIMIT = 2 * 1024 * KIB
SIZE = 128 * KIB
N = 64  # 8 MiB of bodies, four times the limit


def body(queue: str, i: int) -> bytes:
    head = b"%s:%05d:" % (queue.encode(), i)
    return head + b"m" * (SIZE - len(head))


async def held(port: int) -> float:
    status, text = await get(port, "/metrics")
    assert status == 200
    return parse(text)["brokerd_memory_held_bytes"]


async def drain(c: AsyncClient, queue: str, n: int, metrics: int) -> float:
    """Consume and ack ``n`` messages checking order; the most bytes seen held."""
    consumer = await c.consume(queue, prefetch=4, lease=60)
    peak = 0.0
    for i in range(n):
        d = await consumer.next(timeout=BOUND)
        assert d.body == body(queue, i), f"{queue}: expected {i}, got {d.body[:16]!r}"
        await d.ack()
        if i % 8 == 0:
            peak = max(peak, await held(metrics))
    await consumer.cancel()
    await wait_stats(c, queue, ready=0, leased=0)
    return peak


@pytest.fixture
def limited(broker_factory: Any) -> Any:
    metrics = free_port()
    proc = broker_factory(
        "--memory-limit", "2MiB", "--metrics-port", str(metrics), "--max-frame", "1048576"
    ).start()
    proc.metrics = metrics
    return proc


async def test_big_bodies_stay_within_the_memory_limit_across_a_restart(limited: Any) -> None:
    queues = ["big.a", "big.b", "big.c"]
    c = await connect(limited)
    for q in queues:
        await c.declare_queue(q)
    for start in range(0, N, 16):
        batch = [("", q, body(q, i)) for i in range(start, start + 16) for q in queues]
        assert await c.publish_many(batch) == [True] * len(batch)
    for q in queues:
        await wait_stats(c, q, ready=N)
    assert await held(limited.metrics) <= LIMIT

    await c.close()
    await asyncio.to_thread(limited.restart, hard=False)
    c = await connect(limited)
    for q in queues:
        await wait_stats(c, q, ready=N)
    assert 0 < await held(limited.metrics) <= LIMIT
    for q in queues:
        # Paging one message past the budget is allowed, so a consumer never stalls.
        assert await drain(c, q, N, limited.metrics) <= LIMIT + SIZE
    await c.close()


async def test_a_transient_queue_at_the_memory_limit_refuses_publishes(limited: Any) -> None:
    c = await connect(limited)
    await c.declare_queue("t", durable=False)
    accepted = 0
    with pytest.raises(QueueFull, match="memory limit"):
        for i in range(2 * LIMIT // SIZE):
            await c.publish("", "t", body("t", i))
            accepted += 1
    assert accepted == LIMIT // SIZE
    assert (await c.queue_stats("t")).ready == accepted
    # Durable queues still take messages; the excess waits on disk.
    await c.declare_queue("d")
    assert await c.publish_many(("", "d", body("d", i)) for i in range(8)) == [True] * 8
    assert await drain(c, "t", accepted, limited.metrics) <= LIMIT + SIZE
    assert await c.publish("", "t", body("t", 0))
    await c.close()
