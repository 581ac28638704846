"""Settling deliveries without a coroutine per message.

``Delivery.ack()`` is a coroutine; awaiting one per task would cost the worker
a coroutine (and, from callbacks, a task) per message. These helpers queue
the same settle the connection would and attach one callback for the
broker's answer, so settles issued in one loop tick still leave as one frame.
They use the connection's package-internal settle API on purpose: the task
layer is part of the same SDK.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ...connection import ACK, EXTEND, NACK, REJECT
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


def _settle(
    what: str, delivery: Delivery, kind: int, *, requeue: bool = True, number: float | None = None
) -> bool:
    """Queue the settle; False (and logged) if the connection is already gone."""
    try:
        conn = delivery._begin_settle(what)
        fut = conn.settle(kind, delivery.delivery_id, requeue=requeue, number=number)
    except BrokerError as exc:
        log.warning(
            "cannot %s message %s: %s (it will be delivered again)", what, delivery.message_id, exc
        )
        return False
    assert fut is not None
    fut.add_done_callback(_report(what, delivery))
    return True


def ack(delivery: Delivery) -> bool:
    return _settle("ack", delivery, ACK)


def reject(delivery: Delivery, reason: str | None = None) -> bool:
    """Refuse for good: dead-lettered if the queue has a dead-letter queue,
    with ``reason`` in its ``x-death-detail`` header."""
    if not reason:
        return _settle("reject", delivery, REJECT)
    try:
        fut = delivery._begin_settle("reject").reject_because(delivery.delivery_id, reason)
    except BrokerError as exc:
        log.warning(
            "cannot reject message %s: %s (it will be delivered again)", delivery.message_id, exc
        )
        return False
    fut.add_done_callback(_report("reject", delivery))
    return True


def nack(delivery: Delivery, requeue: bool = True, delay: float | None = None) -> bool:
    return _settle("nack", delivery, NACK, requeue=requeue, number=delay)


def extend(delivery: Delivery, seconds: float, on_lost: Callable[[Delivery], None]) -> None:
    """Extend the lease (not a settle: the delivery stays ours)."""
    if delivery.settled:
        return
    conn = delivery.consumer._conn
    try:
        fut = conn.settle(EXTEND, delivery.delivery_id, number=float(seconds))
    except BrokerError:
        return
    assert fut is not None

    def done(f: asyncio.Future[Any]) -> None:
        if f.cancelled():
            return
        if isinstance(f.exception(), LeaseLost):
            on_lost(delivery)

    fut.add_done_callback(done)
