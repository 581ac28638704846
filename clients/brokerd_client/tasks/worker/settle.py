"""Settling deliveries without a coroutine per message.

``Delivery.ack()`` is a coroutine; awaiting one per task would cost the worker
a coroutine (and, from callbacks, a task) per message. These helpers use the
delivery's ``*_nowait`` settles, which queue the same frame and return the
future of the broker's answer, and attach one callback that logs what went
wrong: settles issued in one loop tick still leave as one frame, and no
settle can raise into the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ...consumer import Delivery
from ...errors import BrokerError, LeaseLost

__all__ = ["ack", "extend", "nack", "reject"]

log = logging.getLogger("brokerd_client.tasks.worker")


def _report(what: str, delivery: Delivery) -> Callable[[asyncio.Future[Any]], None]:
    def done(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, LeaseLost):
            log.warning(
                "%s of message %s came too late: its lease was lost, so it will be delivered again",
                what,
                delivery.message_id,
            )
        elif exc is not None:
            log.debug("%s of message %s not confirmed: %s", what, delivery.message_id, exc)

    return done


def _settle(what: str, delivery: Delivery, start: Callable[[], asyncio.Future[None]]) -> bool:
    """Queue the settle ``start`` makes; False (and logged) if it cannot be sent."""
    try:
        fut = start()
    except (BrokerError, ValueError) as exc:  # the connection is gone; a delay out of range
        log.warning(
            "cannot %s message %s: %s (it will be delivered again)", what, delivery.message_id, exc
        )
        return False
    fut.add_done_callback(_report(what, delivery))
    return True


def ack(delivery: Delivery) -> bool:
    return _settle("ack", delivery, delivery.ack_nowait)


def reject(delivery: Delivery, reason: str | None = None) -> bool:
    """Refuse for good: dead-lettered if the queue has a dead-letter queue,
    with ``reason`` in its ``x-death-detail`` header."""
    return _settle("reject", delivery, lambda: delivery.reject_nowait(reason))


def nack(delivery: Delivery, requeue: bool = True, delay: float | None = None) -> bool:
    return _settle("nack", delivery, lambda: delivery.nack_nowait(requeue, delay))


def extend(delivery: Delivery, seconds: float, on_lost: Callable[[Delivery], None]) -> None:
    """Extend the lease (not a settle: the delivery stays ours)."""
    if delivery.settled:
        return
    try:
        fut = delivery.extend_nowait(seconds)
    except BrokerError:
        return

    def done(f: asyncio.Future[Any]) -> None:
        if f.cancelled():
            return
        if isinstance(f.exception(), LeaseLost):
            on_lost(delivery)

    fut.add_done_callback(done)
