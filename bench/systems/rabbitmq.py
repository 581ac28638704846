"""RabbitMQ through aiormq (AMQP 0-9-1): durable classic queue, persistent messages
(delivery_mode=2), publisher confirms, basic.qos prefetch, one basic.ack per message."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from .base import Adapter, Consumer, Delivery, Target, Unreachable

PERSISTENT = 2


class _AmqpDelivery:
    __slots__ = ("_channel", "_tag", "body")

    def __init__(self, channel: aiormq.abc.AbstractChannel, message: DeliveredMessage) -> None:
        self._channel = channel
        self._tag = message.delivery_tag or 0
        self.body = message.body

    async def ack(self) -> None:
        await self._channel.basic_ack(self._tag)


class _AmqpConsumer(Consumer):
    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self._channel = channel
        self._inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()
        self.tag = ""

    async def on_message(self, message: DeliveredMessage) -> None:
        self._inbox.put_nowait(message)

    async def _iterate(self) -> AsyncIterator[Delivery]:
        channel, inbox = self._channel, self._inbox
        while True:
            message = await inbox.get()
            yield _AmqpDelivery(channel, message)

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def cancel(self) -> None:
        if self.tag and not self._channel.is_closed:
            await self._channel.basic_cancel(self.tag)


class RabbitMQAdapter(Adapter):
    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self._conn: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None

    @property
    def channel(self) -> aiormq.abc.AbstractChannel:
        if self._channel is None:
            raise RuntimeError("not connected")
        return self._channel

    async def connect(self) -> None:
        try:
            self._conn = await asyncio.wait_for(aiormq.connect(self.target.url), 10.0)
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
            raise Unreachable(f"cannot connect to {self.target.url}: {exc!r}") from exc
        self._channel = await self._conn.channel(publisher_confirms=True)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn, self._channel = self._conn, None, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5.0)

    async def describe(self) -> dict[str, Any]:
        props = self._conn.server_properties if self._conn is not None else {}
        return {
            "product": _s(props.get("product", "")),
            "version": _s(props.get("version", "")),
            "client": f"aiormq {_dist_version('aiormq')}",
            "queue": "classic, durable; messages delivery_mode=2; publisher confirms",
        }

    async def reset_queue(self, queue: str) -> None:
        await self.channel.queue_delete(queue)
        await self.channel.queue_declare(queue, durable=True)

    async def delete_queue(self, queue: str) -> None:
        await self.channel.queue_delete(queue)

    async def publish(self, queue: str, body: bytes) -> None:
        confirm = await self.channel.basic_publish(
            body,
            routing_key=queue,
            properties=spec.Basic.Properties(delivery_mode=PERSISTENT),
        )
        if not isinstance(confirm, spec.Basic.Ack):
            raise RuntimeError(f"publish not confirmed: {confirm!r}")

    async def publish_batch(self, queue: str, bodies: Sequence[bytes]) -> None:
        channel = self.channel
        confirms = await asyncio.gather(
            *(
                channel.basic_publish(
                    body,
                    routing_key=queue,
                    properties=spec.Basic.Properties(delivery_mode=PERSISTENT),
                )
                for body in bodies
            )
        )
        for confirm in confirms:
            if not isinstance(confirm, spec.Basic.Ack):
                raise RuntimeError(f"publish not confirmed: {confirm!r}")

    async def consume(self, queue: str, prefetch: int) -> Consumer:
        channel = self.channel
        await channel.basic_qos(prefetch_count=prefetch)
        consumer = _AmqpConsumer(channel)
        ok = await channel.basic_consume(queue, consumer.on_message, no_ack=False)
        consumer.tag = ok.consumer_tag or ""
        return consumer

    async def depth(self, queue: str) -> int:
        ok = await self.channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)

    async def sync(self, queue: str) -> None:
        # Frames on a channel are processed in order: once this reply arrives, every
        # basic.ack written before it has been handled.
        await self.channel.queue_declare(queue, passive=True)


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"
