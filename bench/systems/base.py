"""What every measured system looks like to the harness.

An adapter is used both in the orchestrating parent (queue setup, depth, cleanup) and in
the producer/consumer child processes. It is built from a picklable :class:`Target` so
that spawned children can construct their own.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Unreachable(Exception):
    """The system cannot be reached (connection refused, client library missing, ...)."""


@dataclass(frozen=True)
class Target:
    """Which system, and where. Picklable: it crosses process boundaries."""

    system: str  # "brokerd" | "rabbitmq" | "redis"
    url: str


class Delivery(Protocol):
    """One delivered message: its body and a way to acknowledge it."""

    @property
    def body(self) -> bytes: ...

    async def ack(self) -> None: ...


class Consumer(abc.ABC):
    """An active subscription with a prefetch window; iterate it to receive deliveries."""

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    @abc.abstractmethod
    async def cancel(self) -> None: ...

    def lost_acks(self) -> int:
        """Acks the broker refused after the fact (fire-and-forget acks on a lost lease)."""
        return 0


class Adapter(abc.ABC):
    """The same small set of operations on every system, with the same semantics:

    * ``publish``/``publish_batch`` return only once the system confirmed every message
      (AMQP publisher confirm, Redis command reply, brokerd confirm);
    * ``publish_batch`` pipelines the whole batch, then waits for all confirms;
    * a consumer gets at most ``prefetch`` unacknowledged messages and every message is
      acknowledged on its own.
    """

    def __init__(self, target: Target) -> None:
        self.target = target

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def reset_queue(self, queue: str) -> None:
        """Delete the queue if it exists, then declare it durable and empty."""

    @abc.abstractmethod
    async def delete_queue(self, queue: str) -> None: ...

    @abc.abstractmethod
    async def publish(self, queue: str, body: bytes) -> None: ...

    @abc.abstractmethod
    async def publish_batch(self, queue: str, bodies: Sequence[bytes]) -> None: ...

    @abc.abstractmethod
    async def consume(self, queue: str, prefetch: int) -> Consumer: ...

    @abc.abstractmethod
    async def depth(self, queue: str) -> int:
        """Messages ready for delivery (not counting unacknowledged ones)."""

    @abc.abstractmethod
    async def sync(self, queue: str) -> None:
        """One round trip after which every ack sent before it has been processed."""

    async def describe(self) -> dict[str, Any]:
        """Version and relevant server settings, recorded with the results."""
        return {}

    async def __aenter__(self) -> Adapter:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
