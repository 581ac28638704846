"""Deep durable queues page from SQLite: order, counts and restarts.

A durable queue keeps at most 2,048 ready messages in memory; 20,000 messages
make the broker page the backlog in from disk many times over, including
right after a restart.
"""

from __future__ import annotations

import asyncio
from typing import Any

import brokerd_client
from brokerd_client import AsyncClient, Consumer, QueueInfo

BOUND = 30.0
N = 20_000
PREFETCH = 200


async def connect(broker: Any) -> AsyncClient:
    return await brokerd_client.connect(broker.url, client_name="core-paging", timeout=BOUND)


def body(i: int) -> bytes:
    return b"%05d" % i


async def drain(client: AsyncClient, consumer: Consumer, queue: str, start: int, stop: int) -> None:
    """Receive and ack messages ``start..stop-1``, checking FIFO order and,
    every 2,500 messages, that the broker's counters add up."""
    for i in range(start, stop):
        d = await consumer.next(timeout=BOUND)
        assert d.body == body(i), f"expected message {i}, got {d.body!r}"
        if (i + 1) % 2500 == 0 or i + 1 == stop:
            # Settles are processed in order: once this one is answered, every
            # ack before it has been applied.
            await d.ack()
            info = await client.queue_stats(queue)
            assert info.ready + info.leased == N - (i + 1), (i, info)
            assert info.leased <= PREFETCH
            assert info.delayed == 0
        else:
            await d.ack(wait=False)
    assert consumer.lost_acks == 0


async def test_deep_queue_drains_in_fifo_order_and_the_rest_survives_a_restart(
    broker: Any,
) -> None:
    c = await connect(broker)
    await c.declare_queue("core.deep")
    assert await c.publish_many(("", "core.deep", body(i)) for i in range(N)) == [True] * N
    assert await c.queue_stats("core.deep") == QueueInfo(N, 0, 0, 0)

    consumer = await c.consume("core.deep", prefetch=PREFETCH, lease=60)
    done = 7_000
    await drain(c, consumer, "core.deep", 0, done)
    # The acks are committed once a later publish is confirmed.
    await c.declare_queue("core.barrier")
    assert await c.publish("", "core.barrier", b"barrier")

    await asyncio.to_thread(broker.restart)
    await c.close()
    c = await connect(broker)
    # Deliveries leased at the kill are ready again; acked ones are gone.
    assert await c.queue_stats("core.deep") == QueueInfo(N - done, 0, 0, 0)
    consumer = await c.consume("core.deep", prefetch=PREFETCH, lease=60)
    await drain(c, consumer, "core.deep", done, N)
    assert await c.queue_stats("core.deep") == QueueInfo(0, 0, 0, 1)
    assert consumer.buffered == 0
    await c.close()


async def test_purging_a_deep_queue_removes_the_disk_backlog_for_good(broker: Any) -> None:
    c = await connect(broker)
    n = 6_000
    await c.declare_queue("core.purge-deep")
    assert await c.publish_many(("", "core.purge-deep", body(i)) for i in range(n)) == [True] * n
    assert await c.purge_queue("core.purge-deep") == n
    assert await c.queue_stats("core.purge-deep") == QueueInfo(0, 0, 0, 0)
    assert await c.publish("", "core.purge-deep", b"after")

    await asyncio.to_thread(broker.restart)
    await c.close()
    c = await connect(broker)
    # Nothing purged comes back from disk, and the later message is intact.
    assert await c.queue_stats("core.purge-deep") == QueueInfo(1, 0, 0, 0)
    consumer = await c.consume("core.purge-deep")
    d = await consumer.next(timeout=BOUND)
    assert d.body == b"after"
    await d.ack()
    assert await c.queue_stats("core.purge-deep") == QueueInfo(0, 0, 0, 1)
    await c.close()
