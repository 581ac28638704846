"""brokerd through its async client (``brokerd_client``).

Written against the client's published API:
``connect(url)``, ``declare_queue(name, durable=True, lease=...)``,
``publish(exchange, routing_key, body)`` (returns after confirm),
``publish_many(iterable of (exchange, routing_key, body))`` (pipelined, waits for every
confirm), ``consume(queue, prefetch=N)`` -> async-iterable consumer whose deliveries have
``.body`` and ``await .ack()``, ``consumer.cancel()``, ``queue_stats(name)`` ->
``.ready .leased .delayed .consumers``, and ``close()``.

Every workload runs on a freshly started broker with an empty data dir, so ``reset_queue``
only declares.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..tlscerts import client_cafile
from .base import Adapter, Consumer, Delivery, Target, Unreachable

LEASE_SECONDS = 30.0


def ack_waits() -> bool:
    """Whether acks wait for the broker's answer (``BENCH_BROKERD_ACK=wait``).

    Default: fire-and-forget (``ack(wait=False)``), which is what an AMQP ``basic.ack`` is
    and what the Redis adapter's pipelined ``LREM`` amounts to. Either way each message gets
    its own ack, and a consumer's run ends with a round trip so the last ack is processed.
    """
    return os.environ.get("BENCH_BROKERD_ACK", "nowait") == "wait"


class _NoWaitDelivery:
    __slots__ = ("_inner", "body")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.body: bytes = inner.body

    async def ack(self) -> None:
        await self._inner.ack(wait=False)


class _BrokerdConsumer(Consumer):
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def _nowait(self) -> AsyncIterator[Delivery]:
        async for delivery in self._inner:
            yield _NoWaitDelivery(delivery)

    def __aiter__(self) -> AsyncIterator[Delivery]:
        if ack_waits():
            it: AsyncIterator[Delivery] = self._inner.__aiter__()
            return it
        return self._nowait()

    async def cancel(self) -> None:
        await self._inner.cancel()

    def lost_acks(self) -> int:
        return int(getattr(self._inner, "lost_acks", 0))


class BrokerdAdapter(Adapter):
    def __init__(self, target: Target) -> None:
        super().__init__(target)
        import brokerd_client  # imported here so a missing client only fails brokerd

        self._lib: Any = brokerd_client
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("not connected")
        return self._client

    async def connect(self) -> None:
        connect = getattr(self._lib, "connect", None)
        if connect is None:
            raise RuntimeError("brokerd_client has no connect() yet")
        try:
            # --brokerd-tls: brokerds:// URLs, and the run's throwaway CA.
            self._client = await asyncio.wait_for(
                connect(self.target.url, cafile=client_cafile()), 10.0
            )
        except (OSError, TimeoutError) as exc:
            raise Unreachable(f"cannot connect to {self.target.url}: {exc!r}") from exc

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5.0)

    async def describe(self) -> dict[str, Any]:
        return {
            "client": f"brokerd_client {getattr(self._lib, '__version__', '?')}",
            "ack": "ack(wait=True)" if ack_waits() else "ack(wait=False), fire-and-forget",
        }

    async def reset_queue(self, queue: str) -> None:
        await self.client.declare_queue(queue, durable=True, lease=LEASE_SECONDS)

    async def delete_queue(self, queue: str) -> None:
        # The broker and its data dir are thrown away after each workload.
        return None

    async def publish(self, queue: str, body: bytes) -> None:
        await self.client.publish("", queue, body)

    async def publish_batch(self, queue: str, bodies: Sequence[bytes]) -> None:
        await self.client.publish_many([("", queue, body) for body in bodies])

    async def consume(self, queue: str, prefetch: int) -> Consumer:
        return _BrokerdConsumer(await self.client.consume(queue, prefetch=prefetch))

    async def depth(self, queue: str) -> int:
        stats = await self.client.queue_stats(queue)
        return int(stats.ready)

    async def sync(self, queue: str) -> None:
        await self.client.queue_stats(queue)
