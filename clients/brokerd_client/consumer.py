"""Consumers and the deliveries they yield.

A consumer is a buffer the connection pushes ``Deliver`` frames into and the
application pulls from, with ``async for`` or :meth:`Consumer.next`. There is
no task per consumer and none per message: the connection appends to a deque
while it parses a read, and wakes one waiting reader if there is one. At most
``prefetch`` deliveries can be buffered, because the broker counts unacked
deliveries against the prefetch.

How iteration ends, and why:

* The application cancels the consumer: iteration stops at once. Deliveries
  still buffered (received but never handed out) are nacked back with
  ``requeue=True`` so other consumers get them now instead of after their
  lease expires.
* The broker cancels it (its queue was deleted): iteration stops, and
  :attr:`Consumer.cancel_reason` says why. Buffered deliveries are dropped;
  their queue is gone.
* The connection is lost: iteration raises ``ConnectionLost``, because the
  loop ending quietly would look like a normal shutdown. A client that
  recovers (``connect(..., recover=True)``, docs/ha.md) consumes again on its
  next connection instead, and iteration goes on; deliveries of the lost
  connection are settled as no-ops (their messages come again).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from brokerd_protocol import Cancel, Deliver, HeaderValue

from .connection import ACK, EXTEND, NACK, REJECT, RETURN, Connection
from .errors import BrokerError, ConsumerClosed, LeaseLost

log = logging.getLogger("brokerd_client.consumer")

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Consumer", "Delivery"]


class Delivery:
    """One message handed to this consumer, leased until ack/nack/reject.

    ``attempt`` counts deliveries of this message (1 on the first).
    ``timestamp`` is when the broker accepted the publish, in epoch seconds
    (as ``time.time()``; the wire carries milliseconds). ``lease``
    is the lease length the broker granted in seconds, and ``lease_deadline``
    the ``loop.time()`` at which it runs out unless extended. Settle it exactly
    once with :meth:`ack`, :meth:`nack` or :meth:`reject` (or their ``_nowait``
    forms, which return the future of the broker's answer instead of awaiting
    it); :meth:`extend` may be called any number of times before that.
    """

    __slots__ = (
        "_conn",
        "_consumer",
        "_settled",
        "attempt",
        "body",
        "delivery_id",
        "exchange",
        "headers",
        "lease",
        "lease_deadline",
        "message_id",
        "priority",
        "redelivered",
        "routing_key",
        "timestamp",
    )

    def __init__(self, consumer: Consumer, frame: Deliver, now: float) -> None:
        props = frame.props
        self._consumer = consumer
        #: The connection it came on: after a failover its settles are no-ops.
        self._conn = consumer._conn
        self._settled = False
        self.delivery_id: int = frame.delivery
        self.body: bytes = frame.body
        self.exchange: str = frame.exchange
        self.routing_key: str = frame.routing_key
        self.attempt: int = frame.attempt
        self.lease: float = frame.lease
        self.lease_deadline: float = now + frame.lease
        self.headers: dict[str, HeaderValue] = props.get("headers") or {}
        self.message_id: str | None = props.get("message_id")
        self.priority: int = props.get("priority", 0)
        ts = props.get("timestamp")
        # On the wire: integer milliseconds. Here: epoch seconds, like time.time().
        self.timestamp: float | None = ts / 1000 if type(ts) is int else None
        self.redelivered: bool = bool(props.get("redelivered", frame.attempt > 1))

    @property
    def consumer(self) -> Consumer:
        return self._consumer

    @property
    def settled(self) -> bool:
        """True once ack, nack or reject was called."""
        return self._settled

    def __repr__(self) -> str:
        return (
            f"<Delivery id={self.delivery_id} exchange={self.exchange!r} "
            f"routing_key={self.routing_key!r} attempt={self.attempt} "
            f"body={len(self.body)} bytes>"
        )

    def _begin_settle(self, what: str) -> Connection:
        if self._settled:
            raise RuntimeError(f"delivery {self.delivery_id} was already settled; cannot {what}")
        self._settled = True
        return self._conn

    # --- settling without waiting -----------------------------------------------
    #
    # Each queues its frame (settles of one loop tick share a frame) and
    # returns the future of the broker's answer, which fails with LeaseLost if
    # the lease had run out. For code that settles many deliveries from plain
    # callbacks, like the task worker: no coroutine per message. A connection
    # already gone raises its BrokerError at once. The coroutines below are
    # these plus the wait.

    def ack_nowait(self) -> asyncio.Future[None]:
        """Queue the ack; see :meth:`ack`."""
        fut = self._begin_settle("ack").settle(ACK, self.delivery_id)
        assert fut is not None
        return fut

    def nack_nowait(self, requeue: bool = True, delay: float | None = None) -> asyncio.Future[None]:
        """Queue the nack; see :meth:`nack`."""
        if delay is not None and not (math.isfinite(delay) and delay >= 0):
            raise ValueError(f"delay must be >= 0, got {delay}")
        conn = self._begin_settle("nack")
        fut = conn.settle(NACK, self.delivery_id, requeue=requeue, number=delay)
        assert fut is not None
        return fut

    def reject_nowait(self, reason: str | None = None) -> asyncio.Future[None]:
        """Queue the reject; see :meth:`reject`."""
        conn = self._begin_settle("reject")
        if reason:
            return conn.reject_because(self.delivery_id, reason)
        fut = conn.settle(REJECT, self.delivery_id)
        assert fut is not None
        return fut

    def extend_nowait(self, seconds: float) -> asyncio.Future[None]:
        """Queue the extension; see :meth:`extend`. ``lease`` and
        ``lease_deadline`` stay as they were: nothing here learns whether the
        broker granted it."""
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        if self._settled:
            raise RuntimeError(f"delivery {self.delivery_id} was already settled; cannot extend")
        fut = self._conn.settle(EXTEND, self.delivery_id, number=float(seconds))
        assert fut is not None
        return fut

    # --- settling ------------------------------------------------------------------

    async def ack(self, *, wait: bool = True) -> None:
        """Mark the message done; the broker deletes it.

        Acks from the same event-loop tick share one frame. By default this
        waits for the broker's answer and raises ``LeaseLost`` if the lease had
        already run out (the message will be redelivered elsewhere).

        ``wait=False`` returns as soon as the ack is queued for sending, the
        fire-and-forget ack of AMQP clients: a sequential consume loop then
        runs at full speed instead of one round trip per message. The
        broker's answer still arrives; a lost lease is then logged and
        counted in ``consumer.lost_acks`` rather than raised here.
        """
        fut = self.ack_nowait()
        if wait:
            await fut
        else:
            fut.add_done_callback(self._consumer._unawaited_settled)

    async def nack(self, requeue: bool = True, delay: float | None = None) -> None:
        """Give the message back: requeued (after ``delay`` seconds, if given)
        or, with ``requeue=False``, dead-lettered/dropped per the queue's setup."""
        await self.nack_nowait(requeue, delay)

    async def reject(self, reason: str | None = None) -> None:
        """Refuse the message for good: it goes to the dead-letter queue if the
        queue has one, otherwise it is dropped. A ``reason`` is kept in the
        dead-lettered message's ``x-death-detail`` header (first 1024
        characters), so whoever reads the dead-letter queue learns why."""
        await self.reject_nowait(reason)

    async def extend(self, seconds: float) -> None:
        """Ask for the lease to run ``seconds`` from now, so long work is not
        redelivered elsewhere. Raises ``LeaseLost`` if it already expired."""
        await self.extend_nowait(seconds)
        self.lease = float(seconds)
        self.lease_deadline = self._conn._loop.time() + seconds


class Consumer:
    """Deliveries from one queue; iterate it, or call :meth:`next`.

    Several tasks may iterate the same consumer concurrently; each delivery
    goes to exactly one of them. Use ``async with`` to cancel on exit.
    """

    def __init__(self, conn: Connection, queue: str, prefetch: int, lease: float | None) -> None:
        self._conn = conn
        self.queue = queue
        self.prefetch = prefetch
        self.lease = lease
        #: The broker's id for this consumer (set once the Consume is accepted).
        self.consumer_id: int | None = None
        #: Why the broker ended this consumer, if it did.
        self.cancel_reason: str | None = None
        self._buffer: deque[Delivery] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._error: BrokerError | None = None
        #: ``ack(wait=False)`` calls the broker answered with a lost lease.
        self.lost_acks = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Consumer queue={self.queue!r} id={self.consumer_id} {state}>"

    @property
    def closed(self) -> bool:
        """True once the consumer was cancelled (by either side) or its connection lost."""
        return self._closed

    @property
    def buffered(self) -> int:
        """Deliveries received and not yet handed to the application."""
        return len(self._buffer)

    def _unawaited_settled(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, LeaseLost):
            self.lost_acks += 1
            log.warning("ack of delivery %s came too late: %s", exc.delivery_id, exc)
        elif exc is not None:
            log.debug("unawaited ack not confirmed: %s", exc)

    # --- called by the connection (DeliverySink) ------------------------------

    def _on_deliver(self, frame: Deliver, now: float) -> None:
        self._buffer.append(Delivery(self, frame, now))
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _on_broker_cancel(self, reason: str) -> None:
        self.cancel_reason = reason or "cancelled by the broker"
        self._buffer.clear()
        self._end()

    def _on_connection_lost(self, exc: BrokerError) -> None:
        self._error = exc
        self._buffer.clear()
        self._end()

    # --- called by the client's recovery (recovery.py) --------------------------

    def _drop_buffered(self) -> None:
        """The connection was lost: deliveries not handed out yet come again."""
        self._buffer.clear()

    def _resume(self, conn: Connection) -> None:
        """Consume again on ``conn``, the connection that replaced ours."""
        self._buffer.clear()
        self._conn = conn
        self.consumer_id = None

    async def _cancel_on(self, conn: Connection) -> None:
        """Cancelled by the application while it was being resumed."""
        consumer_id = self.consumer_id
        if consumer_id is None or conn.is_closed:
            return
        try:
            await conn.request(lambda req: Cancel(req, consumer_id))
        finally:
            conn.forget_consumer(consumer_id)
            self._release_buffered()

    def _end(self) -> None:
        self._closed = True
        waiters, self._waiters = self._waiters, deque()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # --- application side -----------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        buffer = self._buffer
        while True:
            if buffer:
                return buffer.popleft()
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            fut: asyncio.Future[None] = self._conn._loop.create_future()
            self._waiters.append(fut)
            await fut

    async def next(self, timeout: float | None = None) -> Delivery:  # noqa: ASYNC109 - public API
        """The next delivery, waiting at most ``timeout`` seconds.

        Raises ``TimeoutError`` if none arrived in time, ``ConsumerClosed`` if
        the consumer has ended and ``ConnectionLost`` if the connection did.
        """
        try:
            async with asyncio.timeout(timeout):
                return await self.__anext__()
        except StopAsyncIteration:
            why = self.cancel_reason or "the consumer was cancelled"
            raise ConsumerClosed(f"consumer on queue {self.queue!r} has ended: {why}") from None

    async def cancel(self) -> None:
        """Stop receiving. Deliveries already handed out stay leased to the
        application (ack them as usual); buffered ones are returned to the queue.

        Idempotent, and a no-op once the connection is gone.
        """
        if self._closed:
            return
        self._end()
        conn = self._conn
        consumer_id = self.consumer_id
        if consumer_id is None or conn.is_closed:
            return
        try:
            await conn.request(lambda req: Cancel(req, consumer_id))
        finally:
            conn.forget_consumer(consumer_id)
            self._release_buffered()

    def _release_buffered(self) -> None:
        conn = self._conn
        buffer = self._buffer
        while buffer and not conn.is_closed:
            conn.settle(RETURN, buffer.popleft().delivery_id, wait=False)
        buffer.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Also while its connection is being replaced: it must not resume.
        await self.cancel()
