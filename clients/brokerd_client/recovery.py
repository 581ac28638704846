"""A client that survives losing its connection (``connect(..., recover=True)``).

When the connection of an :class:`~brokerd_client.client.AsyncClient` is lost
(the active node was killed, a standby took over, the network broke), the
client opens a new one through the same URL (a failover URL's nodes in turn,
following redirects, with jittered backoff: :mod:`brokerd_client.failover`)
and puts back what the application had on the old one, in this order:

1. the exchanges, queues and bindings it declared (remembered, bounded by
   ``MAX_REMEMBERED``), and its ``subscribe`` topics with their handlers;
2. its consumers, with the same queue, prefetch and lease: the same
   :class:`~brokerd_client.consumer.Consumer` objects, so an ``async for``
   over one keeps going. Deliveries of the old connection cannot be settled
   any more: settling one is a no-op (logged at debug), its message returns
   to the queue by itself and is delivered again;
3. the publishes that were not confirmed, sent again (at-least-once: the old
   node may have stored some of them). The caller's ``publish`` keeps
   waiting and returns the new connection's confirm.

Only then is the new connection the client's: calls made meanwhile wait for
it. Requests that were in flight when the connection broke are sent again if
sending one twice does no harm (declares, binds, reads, ``result_set``,
``result_wait``, schedules, revokes, ...) and fail with ``ConnectionLost``
otherwise (deletes, purges, ``rate_acquire``, frames sent with ``call``):
their effect may or may not have happened, and only the caller can say what
to do. The client's methods say which they are (``retry=``).

A failure no other node can fix (the token or the certificate refused) is
raised at once; otherwise the client gives up after ``timeout`` seconds
(``failover_timeout``, default ``FAILOVER_TIMEOUT``). Giving up fails the
carried publishes and the consumers with ``ConnectionLost``, as a client
without recovery would have at the moment of the loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from brokerd_protocol import Consume, Frame, Subscribe

from .connection import Connection, DeliverySink, PublishBatch, _ConfirmWaiter, _resolve_publish
from .consumer import Consumer
from .errors import BrokerError, ClientClosed, ConnectionLost
from .failover import connect_any, retryable
from .url import BrokerURL

__all__ = ["MAX_REMEMBERED", "Recovery"]

log = logging.getLogger("brokerd_client")

#: Declarations (exchanges, queues, bindings) a client remembers to declare
#: again after a failover. Past it, further ones are not remembered (logged once).
MAX_REMEMBERED = 10_000


class _Owner(Protocol):
    """What the recovery needs from its client."""

    _conn: Connection


class Recovery:
    """One client's memory of what to re-create, and the re-creating."""

    def __init__(
        self,
        owner: _Owner,
        nodes: list[BrokerURL],
        open_node: Callable[[BrokerURL], Awaitable[Connection]],
        timeout: float,
    ) -> None:
        self._owner = owner
        self._nodes = nodes
        self._open_node = open_node
        self.timeout = timeout
        #: Declarations to replay, in the order they were first made.
        self._declared: dict[tuple[str, ...], Callable[[int], Frame]] = {}
        self._warned_full = False
        self._topics: list[str] = []
        # What the lost connection(s) handed over, waiting for the next one.
        self._publishes: list[tuple[_ConfirmWaiter, bytes]] = []
        self._consumers: list[DeliverySink] = []
        self._done: asyncio.Future[Connection] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Why the client gave up recovering, once it did.
        self.failure: BrokerError | None = None
        #: Times a lost connection was replaced (for tests and metrics).
        self.recoveries = 0

    # --- remembering ------------------------------------------------------------

    def remember(self, key: tuple[str, ...], make: Callable[[int], Frame]) -> None:
        declared = self._declared
        if key not in declared and len(declared) >= MAX_REMEMBERED:
            if not self._warned_full:
                self._warned_full = True
                log.warning(
                    "more than %d declarations: later ones are not declared again after a failover",
                    MAX_REMEMBERED,
                )
            return
        declared[key] = make

    def forget(self, match: Callable[[tuple[str, ...]], bool]) -> None:
        for key in [k for k in self._declared if match(k)]:
            del self._declared[key]

    def subscribed(self, topics: list[str]) -> None:
        for topic in topics:
            if topic not in self._topics:
                self._topics.append(topic)

    # --- the connection ----------------------------------------------------------

    def attach(self, conn: Connection) -> None:
        conn.keep_publishes()
        conn.on_lost = self._on_lost

    @property
    def recovering(self) -> bool:
        return self._done is not None and not self._done.done()

    async def current(self, dead: Connection) -> Connection:
        """The connection that replaced ``dead``, once recovered; raises the
        reason if the client gave up (or ``dead``'s error, if it never tried)."""
        conn = self._owner._conn
        if conn is not dead and not conn.is_closed:
            return conn
        done = self._done
        if done is None:
            failure = self.failure or conn.error
            assert failure is not None
            raise failure
        return await asyncio.shield(done)

    def _on_lost(self, conn: Connection, exc: BrokerError) -> None:
        """Called by a connection as it fails (before it fails anything)."""
        if self._closed:
            return
        publishes, consumers = conn.hand_over()
        self._publishes.extend(publishes)
        for sink in consumers:
            if isinstance(sink, Consumer):
                sink._drop_buffered()  # delivered again by the next connection
            self._consumers.append(sink)
        if self._task is not None:
            return  # a connection of the recovery in progress died: it goes on
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        if not retryable(exc):
            self._give_up(exc)
            return
        log.warning("brokerd connection lost (%s): recovering", exc)
        self._task = loop.create_task(self._recover(exc))

    async def _recover(self, exc: BrokerError) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        last = exc
        conn: Connection | None = None
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self._give_up(
                        ConnectionLost(f"gave up recovering after {self.timeout:g} s: {last}")
                    )
                    return
                try:
                    conn = await connect_any(self._nodes, self._open_node, remaining)
                except BrokerError as failure:
                    if retryable(failure):
                        failure = ConnectionLost(
                            f"gave up recovering after {self.timeout:g} s: {failure}"
                        )
                    self._give_up(failure)
                    return
                self.attach(conn)
                try:
                    await self._replay(conn)
                except ConnectionLost as lost:
                    last = lost  # it went too: its publishes and consumers came back
                    continue
                break
        except asyncio.CancelledError:
            if conn is not None:
                conn.on_lost = None
                conn._abort()
            self._give_up(ClientClosed("the client was closed while recovering"))
            raise
        self._owner._conn = conn
        self._task = None
        self.recoveries += 1
        log.warning("brokerd connection recovered (%s)", conn._where)
        done, self._done = self._done, None
        if done is not None and not done.done():
            done.set_result(conn)

    async def _replay(self, conn: Connection) -> None:
        """Declare, subscribe and consume again on ``conn``, then republish."""
        futs: list[asyncio.Future[Any]] = [conn.request(make) for make in self._declared.values()]
        if self._topics:
            topics = list(self._topics)
            futs.append(conn.request(lambda req: Subscribe(req, topics)))
        for handler_type, handler in self._handlers.items():
            conn.set_frame_handler(handler_type, handler)
        consumers, self._consumers = self._consumers, []
        resumed: list[tuple[Consumer, asyncio.Future[Any]]] = []
        for sink in consumers:
            assert isinstance(sink, Consumer)
            if sink.closed:
                continue
            sink._resume(conn)
            resumed.append((sink, conn.request(_consume_frame(sink), sink)))
        try:
            outcomes = await asyncio.gather(*futs, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, ConnectionLost):
                    raise outcome
                if isinstance(outcome, BrokerError):
                    log.warning("declaring again after a failover failed: %s", outcome)
            for sink, fut in resumed:
                try:
                    sink.consumer_id = await fut
                except ConnectionLost:
                    raise
                except BrokerError as refused:
                    sink._on_connection_lost(refused)
                    continue
                if sink.closed:  # cancelled by the application meanwhile
                    await sink._cancel_on(conn)
        except ConnectionLost:
            # Consumers not yet registered on ``conn`` were not handed over by it.
            for sink, _ in resumed:
                if sink not in self._consumers and not sink.closed:
                    self._consumers.append(sink)
            raise
        publishes, self._publishes = self._publishes, []
        conn.adopt_publishes(publishes)

    @property
    def _handlers(self) -> dict[type[Frame], Callable[[Any], None]]:
        return self._owner._conn.extension_handlers()

    def _give_up(self, exc: BrokerError) -> None:
        log.error("brokerd connection not recovered: %s", exc)
        self.failure = exc
        self._task = None
        publishes, self._publishes = self._publishes, []
        for waiter, _ in publishes:
            _fail_waiter(waiter, exc)
        consumers, self._consumers = self._consumers, []
        for sink in consumers:
            sink._on_connection_lost(exc)
        done, self._done = self._done, None
        if done is not None and not done.done():
            done.set_exception(exc)
            done.exception()

    async def close(self) -> None:
        """Stop recovering (the client is closing)."""
        self._closed = True
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._publishes or self._consumers:
            self._give_up(ClientClosed("the client was closed"))


def _fail_waiter(waiter: _ConfirmWaiter, exc: BrokerError) -> None:
    if type(waiter) is PublishBatch:
        for seq in list(waiter.pending()):
            waiter.resolve(seq, exc)
        return
    _resolve_publish(waiter, 0, exc)


def _consume_frame(consumer: Consumer) -> Callable[[int], Frame]:
    queue, prefetch = consumer.queue, consumer.prefetch
    lease = None if consumer.lease is None else float(consumer.lease)
    return lambda req: Consume(req, queue, prefetch, lease)
