"""``Delivery.ack(wait=False)``: queued without waiting, still never silent."""

from __future__ import annotations

import asyncio

import brokerd_client


async def test_unawaited_ack_settles_the_delivery(broker) -> None:  # type: ignore[no-untyped-def]
    async with await brokerd_client.connect(broker.url) as client:
        await client.declare_queue("nowait", durable=True)
        await client.publish_many([("", "nowait", b"%d" % i) for i in range(50)])
        consumer = await client.consume("nowait", prefetch=10)
        for _ in range(50):
            d = await asyncio.wait_for(consumer.__anext__(), timeout=10)
            await d.ack(wait=False)
        # Requests are answered in order, so this stats reply follows every ack.
        stats = await client.queue_stats("nowait")
        assert (stats.ready, stats.leased) == (0, 0)
        assert consumer.lost_acks == 0


async def test_unawaited_ack_of_a_lost_lease_is_counted(broker) -> None:  # type: ignore[no-untyped-def]
    # After its lease runs out the connection gets nothing until it shows life;
    # an idle client does so with its heartbeat.
    async with await brokerd_client.connect(broker.url, heartbeat=0.5) as client:
        await client.declare_queue("nowait-lost", durable=True, lease=0.3)
        await client.publish("", "nowait-lost", b"late")
        consumer = await client.consume("nowait-lost", prefetch=1)
        first = await asyncio.wait_for(consumer.__anext__(), timeout=10)
        # The lease runs out; the broker puts the message back and, once our
        # heartbeat shows we are alive, redelivers it.
        again = await asyncio.wait_for(consumer.__anext__(), timeout=10)
        assert again.attempt == 2
        await first.ack(wait=False)  # too late: must not raise here ...
        await client.queue_stats("nowait-lost")  # ... but the answer is in by now
        assert consumer.lost_acks == 1
        await again.ack()
        stats = await client.queue_stats("nowait-lost")
        assert (stats.ready, stats.leased) == (0, 0)
