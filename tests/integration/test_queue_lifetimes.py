"""``auto_delete`` and ``expires`` against a real brokerd (SPEC §9.2).

What a Celery remote-control client relies on: its reply queue goes away
when its connection does, and a queue nobody uses any more goes after its
``expires``. Observers look with a mandatory publish (which is not a use of
the queue, unlike QueueStats or a declare) and wait with a generous deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from clientkit import connect

from brokerd_client import AsyncClient, NotFound, Unroutable

BOUND = 20.0


async def gone(client: AsyncClient, queue: str) -> None:
    """Wait until publishing to ``queue`` finds no queue (without using it)."""
    deadline = asyncio.get_running_loop().time() + BOUND
    while True:
        try:
            await client.publish("", queue, b"probe", mandatory=True)
        except Unroutable:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{queue!r} still exists"
        await asyncio.sleep(0.05)


async def test_an_auto_delete_queue_goes_when_its_consumers_connection_closes(
    broker: Any,
) -> None:
    observer = await connect(broker, "observer")
    owner = await connect(broker, "owner")
    await owner.declare_queue("replies", durable=False, auto_delete=True)
    await owner.consume("replies")
    await observer.publish("", "replies", b"for the owner")
    assert (await observer.queue_stats("replies")).consumers == 1
    await owner.close()
    await gone(observer, "replies")
    with pytest.raises(NotFound):
        await observer.queue_stats("replies")
    await observer.close()


async def test_an_auto_delete_queue_goes_when_its_last_consumer_is_cancelled(
    broker: Any,
) -> None:
    client = await connect(broker)
    await client.declare_queue("events", auto_delete=True)
    consumer = await client.consume("events")
    await client.publish("", "events", b"x")
    await consumer.cancel()
    await gone(client, "events")
    await client.close()


async def test_an_unused_queue_expires_and_stays_gone_after_a_restart(broker: Any) -> None:
    client = await connect(broker)
    await client.declare_queue("stale", expires=0.3)
    await client.publish("", "stale", b"abandoned")
    await gone(client, "stale")
    await client.close()
    broker.restart()
    client = await connect(broker)
    with pytest.raises(NotFound):
        await client.queue_stats("stale")
    await client.close()


async def test_a_durable_expiring_queue_survives_a_restart_with_its_options(
    broker: Any,
) -> None:
    client = await connect(broker)
    await client.declare_queue("kept", expires=3600, auto_delete=True)
    await client.publish("", "kept", b"m")
    await client.close()
    broker.restart()
    client = await connect(broker)
    assert (await client.queue_stats("kept")).ready == 1
    # The same options are accepted again; others are refused.
    await client.declare_queue("kept", expires=3600, auto_delete=True)
    await client.close()
