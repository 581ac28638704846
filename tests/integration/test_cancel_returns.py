"""Cancelling a consumer hands back what it prefetched without counting it as a
delivery attempt: the application never saw those messages."""

from __future__ import annotations

import asyncio

import brokerd_client


async def test_cancel_returns_unread_prefetch_uncounted(broker) -> None:  # type: ignore[no-untyped-def]
    async with await brokerd_client.connect(broker.url) as client:
        await client.declare_queue("once", max_deliveries=1, dead_letter_queue="once.dead")
        await client.declare_queue("once.dead")
        await client.publish_many([("", "once", b"%d" % i) for i in range(5)])
        consumer = await client.consume("once", prefetch=10)
        first = await asyncio.wait_for(consumer.__anext__(), timeout=10)
        await first.ack()
        # The other four were delivered to the client's buffer, never read.
        for _ in range(1000):
            if consumer.buffered >= 4:
                break
            await asyncio.sleep(0.01)
        assert consumer.buffered == 4
        await consumer.cancel()
        stats = await client.queue_stats("once")
        assert (stats.ready, stats.leased) == (4, 0)
        assert (await client.queue_stats("once.dead")).ready == 0
        again = await client.consume("once", prefetch=10)
        bodies = []
        for _ in range(4):
            d = await asyncio.wait_for(again.__anext__(), timeout=10)
            assert d.attempt == 1
            bodies.append(d.body)
            await d.ack()
        assert bodies == [b"1", b"2", b"3", b"4"]
