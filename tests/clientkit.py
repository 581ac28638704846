"""Helpers the integration tests share: connect with a bound, wait for counters,
take deliveries. Waits are bounded, never timing asserts."""

from __future__ import annotations

import asyncio
from typing import Any

import brokerd_client
from brokerd_client import AsyncClient, Consumer, Delivery, QueueInfo

#: Upper bound, in seconds, for anything a test waits on.
BOUND = 20.0


async def connect(broker: Any, name: str = "tests") -> AsyncClient:
    return await brokerd_client.connect(broker.url, client_name=name, timeout=BOUND)


async def wait_stats(client: AsyncClient, queue: str, **expected: int) -> QueueInfo:
    """Poll queue_stats until the named counters match."""
    async with asyncio.timeout(BOUND):
        while True:
            info = await client.queue_stats(queue)
            if all(getattr(info, k) == v for k, v in expected.items()):
                return info
            await asyncio.sleep(0.01)


async def take(consumer: Consumer, n: int) -> list[Delivery]:
    return [await consumer.next(timeout=BOUND) for _ in range(n)]
