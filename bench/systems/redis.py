"""Redis as a reliable queue, the way Celery-style users run it.

Publish: LPUSH onto a list; the publisher "confirm" is the LPUSH reply (a batch is one
pipeline of LPUSH commands, one per message). Consume: move messages from the list onto a
per-consumer processing list, up to ``prefetch`` at a time (a small server-side script
running LMOVE until the list is empty or ``prefetch`` were moved, so one round trip), and
BLMOVE to wait when the list is empty; ack = LREM of that message from the processing list.
Acks are pipelined: they go out with the next fetch (or on ``sync``), one LREM per message.
Redis never moves messages back from a processing list by itself: that needs a separate
reaper.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from .base import Adapter, Consumer, Delivery, Target, Unreachable

BLOCK_SECONDS = 1.0

# KEYS[1] source list, KEYS[2] processing list, ARGV[1] at most this many.
MOVE_UP_TO = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local v = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not v then break end
  out[#out + 1] = v
end
return out
"""
MAX_CONNECTIONS = 100


class _RedisDelivery:
    __slots__ = ("_consumer", "body")

    def __init__(self, consumer: _RedisConsumer, body: bytes) -> None:
        self._consumer = consumer
        self.body = body

    async def ack(self) -> None:
        self._consumer.pending_acks.append(self.body)


class _RedisConsumer(Consumer):
    def __init__(self, client: aioredis.Redis, queue: str, prefetch: int) -> None:
        self._client = client
        self._queue = queue
        self.processing = f"{queue}:processing:{uuid.uuid4().hex[:8]}"
        self._prefetch = prefetch
        self._move = client.register_script(MOVE_UP_TO)
        self.pending_acks: list[bytes] = []

    async def flush_acks(self) -> None:
        if self.pending_acks:
            pipe = self._client.pipeline(transaction=False)
            for body in self.pending_acks:
                pipe.lrem(self.processing, -1, body)  # type: ignore[arg-type]
            self.pending_acks.clear()
            await pipe.execute()

    async def _iterate(self) -> AsyncIterator[Delivery]:
        client, queue, processing = self._client, self._queue, self.processing
        while True:
            pipe = client.pipeline(transaction=False)
            acks = self.pending_acks
            for body in acks:
                pipe.lrem(processing, -1, body)  # type: ignore[arg-type]
            acks.clear()
            await self._move(keys=[queue, processing], args=[self._prefetch], client=pipe)
            replies = await pipe.execute()
            got = replies[-1]
            if not got:
                moved = await client.blmove(
                    queue,
                    processing,
                    BLOCK_SECONDS,  # type: ignore[arg-type]  # Redis >= 6 takes seconds as a float
                    "RIGHT",
                    "LEFT",
                )
                if moved is None:
                    continue
                got = [moved]
            for body in got:
                yield _RedisDelivery(self, body)

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def cancel(self) -> None:
        await self.flush_acks()


class RedisAdapter(Adapter):
    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self._client: aioredis.Redis | None = None
        self._consumers: list[_RedisConsumer] = []

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("not connected")
        return self._client

    async def connect(self) -> None:
        # Concurrent commands (W5's paced publishes) each hold a pooled connection; when
        # they pile up, wait for a free one instead of failing at the pool's limit.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.target.url,
            max_connections=MAX_CONNECTIONS,
            timeout=None,
            socket_connect_timeout=5.0,
        )
        client = aioredis.Redis(connection_pool=pool)
        try:
            await client.ping()
        except (OSError, RedisConnectionError) as exc:
            await client.aclose()
            raise Unreachable(f"cannot connect to {self.target.url}: {exc!r}") from exc
        self._client = client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def reset_queue(self, queue: str) -> None:
        await self.delete_queue(queue)

    async def delete_queue(self, queue: str) -> None:
        keys = [queue]
        async for key in self.client.scan_iter(match=f"{queue}:processing:*"):
            keys.append(key)
        await self.client.delete(*keys)

    async def publish(self, queue: str, body: bytes) -> None:
        await self.client.lpush(queue, body)

    async def publish_batch(self, queue: str, bodies: Sequence[bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for body in bodies:
            pipe.lpush(queue, body)
        replies = await pipe.execute()
        if len(replies) != len(bodies):
            raise RuntimeError("short pipeline reply")

    async def consume(self, queue: str, prefetch: int) -> Consumer:
        consumer = _RedisConsumer(self.client, queue, prefetch)
        self._consumers.append(consumer)
        return consumer

    async def depth(self, queue: str) -> int:
        return int(await self.client.llen(queue))

    async def sync(self, queue: str) -> None:
        for consumer in self._consumers:
            await consumer.flush_acks()
        await self.client.ping()

    async def describe(self) -> dict[str, Any]:
        info = await self.client.info("server")
        return {
            "version": _s(info.get("redis_version", "")),
            "client": f"redis-py {redis.__version__}",
            "durability": await self.durability_config(),
        }

    async def memory_rss(self) -> int:
        info = await self.client.info("memory")
        return int(info["used_memory_rss"])

    async def durability_config(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in ("appendonly", "appendfsync", "save"):
            reply = await self.client.config_get(key)
            out.update({_s(k): _s(v) for k, v in reply.items()})
        return out


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
