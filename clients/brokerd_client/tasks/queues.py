"""Queue and exchange declarations for ``task_queues``, named like kombu's so a
Celery config ports line by line.

A :class:`Queue` says where messages for it come from (an exchange and a
binding key) and how brokerd keeps them (lease, delivery limit, dead-letter
queue). Every producer and worker of an app declares the same queues from the
same config, so the broker's redeclaration check (identical or refused) never
trips between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["EXCHANGE_TYPES", "Exchange", "Queue"]

#: Exchange types a task app may declare (fanout makes no sense for tasks:
#: each task must run once, not once per queue).
EXCHANGE_TYPES = frozenset({"direct", "topic"})


@dataclass(frozen=True, slots=True)
class Exchange:
    """A named exchange; ``type`` is ``"direct"`` or ``"topic"``."""

    name: str
    type: str = "direct"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"exchange name must be a str, not {type(self.name).__name__}")
        if self.type not in EXCHANGE_TYPES:
            raise ValueError(
                f"exchange {self.name!r}: type must be one of {sorted(EXCHANGE_TYPES)}, "
                f"got {self.type!r}"
            )


@dataclass(frozen=True, slots=True)
class Queue:
    """A task queue.

    ``exchange`` (a name or :class:`Exchange`; ``None`` = ``task_default_exchange``)
    and ``routing_key`` (the binding key; ``None`` = the queue name) say which
    published messages reach it. ``""`` as exchange means brokerd's default
    exchange, which routes by queue name and needs no binding.

    brokerd options: ``lease`` (seconds; ``None`` = ``task_default_lease``) is
    how long a delivery stays with a worker between lease extensions, which the
    worker sends every third of it while a task runs, so a task may run far
    longer than its lease. ``max_deliveries`` and ``dead_letter_queue`` bound
    redeliveries and keep what was refused. ``max_priority`` (1-255, kombu's
    name for ``x-max-priority``): a task sent with a higher priority enters
    this queue at it.
    """

    name: str
    exchange: str | Exchange | None = None
    routing_key: str | None = None
    durable: bool = True
    lease: float | None = None
    max_deliveries: int | None = None
    dead_letter_queue: str | None = None
    max_length: int | None = None
    max_priority: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"queue name must be a non-empty str, got {self.name!r}")
        if self.exchange is not None and not isinstance(self.exchange, str | Exchange):
            raise TypeError(
                f"queue {self.name!r}: exchange must be a str or Exchange, "
                f"not {type(self.exchange).__name__}"
            )
        if self.routing_key is not None and not isinstance(self.routing_key, str):
            raise TypeError(f"queue {self.name!r}: routing_key must be a str")
        if self.lease is not None and (
            isinstance(self.lease, bool)
            or not isinstance(self.lease, int | float)
            or not math.isfinite(self.lease)
            or not 0.001 <= self.lease <= 86400
        ):
            raise ValueError(f"queue {self.name!r}: lease must be 0.001..86400 seconds")
        if self.max_deliveries is not None and (
            type(self.max_deliveries) is not int or self.max_deliveries < 1
        ):
            raise ValueError(f"queue {self.name!r}: max_deliveries must be an int >= 1")
        if self.max_length is not None and (
            type(self.max_length) is not int or self.max_length < 0
        ):
            raise ValueError(f"queue {self.name!r}: max_length must be an int >= 0")
        if self.max_priority is not None and (
            type(self.max_priority) is not int or not 1 <= self.max_priority <= 255
        ):
            raise ValueError(f"queue {self.name!r}: max_priority must be an int from 1 to 255")

    @property
    def exchange_name(self) -> str | None:
        if isinstance(self.exchange, Exchange):
            return self.exchange.name
        return self.exchange
