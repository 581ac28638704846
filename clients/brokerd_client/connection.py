"""One TCP connection to a broker: bytes in and out, and who is waiting for what.

This module owns everything that is about the *connection* rather than the
API: the handshake, request/reply correlation, publisher confirms, settle
(ack/nack/reject/extend) batching, write coalescing, backpressure and
heartbeats. The user-facing methods live in :mod:`brokerd_client.client` and
:mod:`brokerd_client.consumer` and call down into :class:`Connection`.

Why it looks the way it does (throughput is a product requirement):

* It is an ``asyncio.Protocol`` fed by the sans-IO ``Decoder``; streams would
  add a task hop and a buffer copy per read.
* Nothing is written to the socket directly. Frames go into a list and one
  ``loop.call_soon`` callback joins and writes them, so everything produced in
  one event-loop tick leaves in one ``transport.write`` (one syscall).
* Acks (and nacks, rejects, extends) issued in the same tick are merged into
  one frame per kind carrying a list of delivery ids, answered by one
  ``Settled`` reply; more ids than a frame may carry (``MAX_SETTLE_IDS``,
  SPEC §13) leave in several frames. Only the ids the broker lists as
  ``lost`` fail.
* Confirms arrive as ranges of publish sequence numbers; they are resolved in
  bulk from a ``seq -> waiter`` dict with no per-message task.
* Memory stays bounded however fast the application publishes: publishers
  wait while the transport is paused (the kernel buffer is full) or while
  ``max_inflight`` publishes are unconfirmed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeAlias, cast

from brokerd_protocol import (
    DEFAULT_MAX_FRAME,
    HARD_MAX_FRAME,
    HEADER_SIZE,
    MAX_REJECT_REASON,
    MAX_SETTLE_IDS,
    SUPPORTED_VERSIONS,
    Ack,
    Cancel,
    Close,
    Confirm,
    ConsumerCancelled,
    Decoder,
    Deliver,
    Error,
    Extend,
    Frame,
    Heartbeat,
    Hello,
    Nack,
    Ok,
    ProtocolError,
    Publish,
    PublishError,
    Redirect,
    Reject,
    Settled,
    Welcome,
    encode,
)

from .errors import (
    BrokerError,
    ClientClosed,
    ConnectionLost,
    HeartbeatTimeout,
    LeaseLost,
    MessageTooLarge,
    ProtocolViolation,
    Redirected,
    TLSError,
    error_from_code,
)
from .tls import plain_port_hint, tls_failure

__all__ = [
    "ACK",
    "EXTEND",
    "NACK",
    "REJECT",
    "RETURN",
    "Connection",
    "DeliverySink",
    "PublishBatch",
]

log = logging.getLogger("brokerd_client")

#: Settle kinds, used as keys when merging settles issued in the same tick.
ACK: Final = 0
NACK: Final = 1
#: A requeue that is not a delivery attempt: deliveries the application never saw.
RETURN: Final = 4
REJECT: Final = 2
EXTEND: Final = 3

#: The transport pauses us above this many buffered bytes. Large enough that a
#: burst of small publishes never blocks, small enough to bound memory.
_WRITE_HIGH_WATER = 4 * 1024 * 1024
#: First bytes of a TLS alert or handshake record: a plain client reached a TLS port.
_TLS_RECORDS = (b"\x15", b"\x16")
#: Flush early once this much is buffered within one tick (used by publish_many).
FLUSH_THRESHOLD = 256 * 1024


#: Server-to-client frames the connection itself handles.
_CORE_FRAMES = frozenset(
    {
        Deliver,
        Confirm,
        Settled,
        Ok,
        Error,
        PublishError,
        Heartbeat,
        ConsumerCancelled,
        Close,
        Welcome,
    }
)


class DeliverySink(Protocol):
    """What the connection needs from a consumer (implemented by ``Consumer``).

    Declared here as a protocol so this module does not import the consumer
    module, which imports this one.
    """

    def _on_deliver(self, frame: Deliver, now: float) -> None: ...

    def _on_broker_cancel(self, reason: str) -> None: ...

    def _on_connection_lost(self, exc: BrokerError) -> None: ...


class PublishBatch:
    """Collects the outcomes of a ``publish_many`` call without a future per message.

    ``results[i]`` is the outcome of the i-th message handed to the connection;
    ``done`` resolves once every one of them is settled *and* the caller has
    said no more are coming (:meth:`seal`).
    """

    __slots__ = ("_index", "_remaining", "_sealed", "done", "results")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.results: list[bool | BrokerError] = []
        self._index: dict[int, int] = {}
        self._remaining = 0
        self._sealed = False
        self.done: asyncio.Future[None] = loop.create_future()

    def add(self, seq: int) -> None:
        self._index[seq] = len(self.results)
        self.results.append(False)
        self._remaining += 1

    def resolve(self, seq: int, outcome: bool | BrokerError) -> None:
        i = self._index.pop(seq, None)
        if i is None:
            return
        self.results[i] = outcome
        self._remaining -= 1
        if self._sealed and not self._remaining and not self.done.done():
            self.done.set_result(None)

    def take(self, seq: int) -> int | None:
        """Forget ``seq``, and return its message's index (republishing)."""
        return self._index.pop(seq, None)

    def pending(self) -> list[int]:
        """The seqs still waiting for an outcome."""
        return list(self._index)

    def put(self, seq: int, index: int) -> None:
        """The message at ``index`` now waits for ``seq`` (republished)."""
        self._index[seq] = index

    def seal(self) -> None:
        self._sealed = True
        if not self._remaining and not self.done.done():
            self.done.set_result(None)


_ConfirmWaiter: TypeAlias = "asyncio.Future[bool] | PublishBatch"
_SettleKey: TypeAlias = tuple[int, bool, float | None]


class _SettleBatch:
    """Delivery ids of one kind (and the same nack/extend arguments) issued in
    one tick, with the futures of the callers waiting on them (``None`` for
    settles the client makes on its own, e.g. returning unwanted deliveries)."""

    __slots__ = ("futs", "ids", "kind", "number", "requeue")

    def __init__(self, kind: int, requeue: bool, number: float | None) -> None:
        self.kind = kind
        self.requeue = requeue
        self.number = number  # nack delay or extend seconds
        self.ids: list[int] = []
        self.futs: list[asyncio.Future[None] | None] = []

    def frame(self, req: int) -> Frame:
        kind = self.kind
        if kind == ACK:
            return Ack(req, self.ids)
        if kind == NACK:
            return Nack(req, self.ids, self.requeue, self.number)
        if kind == RETURN:
            return Nack(req, self.ids, True, None, counted=False)
        if kind == REJECT:
            return Reject(req, self.ids)
        assert self.number is not None
        return Extend(req, self.ids, self.number)

    def resolve(self, lost: list[int]) -> None:
        lost_set = set(lost) if lost else ()
        for delivery_id, fut in zip(self.ids, self.futs, strict=True):
            if fut is None or fut.done():
                continue
            if delivery_id in lost_set:
                fut.set_exception(LeaseLost(delivery_id))
            else:
                fut.set_result(None)

    def fail(self, exc: BrokerError) -> None:
        for fut in self.futs:
            if fut is not None and not fut.done():
                _set_exception_quietly(fut, exc)


class _ReasonedReject(_SettleBatch):
    """A Reject that says why (SPEC §8.23). One reason covers every id of a
    frame, so each goes in a frame of its own: refusals are rare, and the
    merged settles of the hot path stay as they are."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        super().__init__(REJECT, False, None)
        self.reason = reason

    def frame(self, req: int) -> Frame:
        return Reject(req, self.ids, self.reason)


def _set_exception_quietly(fut: asyncio.Future[Any], exc: BaseException) -> None:
    """Fail ``fut`` without asyncio logging "exception was never retrieved"
    when its waiter is already gone: mass failures on connection loss would
    otherwise flood the log. An awaiting caller still gets the exception."""
    fut.set_exception(exc)
    fut.exception()


class Connection(asyncio.Protocol):
    """The protocol object for one connection; see the module docstring.

    Create it with :meth:`open`, which performs the handshake. All methods must
    be called on the loop that owns the connection.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        hello: Hello,
        *,
        max_inflight: int = 10_000,
    ) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self._loop = loop
        self._hello = hello
        self._transport: asyncio.Transport | None = None
        self._decoder = Decoder(DEFAULT_MAX_FRAME)
        self._welcome: asyncio.Future[Welcome] = loop.create_future()
        self._lost: asyncio.Future[None] = loop.create_future()
        self._error: BrokerError | None = None
        #: host:port for messages, and whether TLS is on (set by ``open``).
        self._where = "?"
        self._tls = False
        self.server_name = ""
        self.heartbeat = 0.0
        #: Largest payload the broker accepts from us (from Welcome).
        self.max_frame = DEFAULT_MAX_FRAME

        # Outgoing bytes of the current tick, joined and written by _flush.
        self._wbuf: list[bytes] = []
        self.wbuf_bytes = 0
        self._flush_scheduled = False
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []

        # Requests awaiting Ok/Error, and Consume requests whose Ok registers a consumer.
        self._req_ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._consume_sinks: dict[int, DeliverySink] = {}
        self._consumers: dict[int, DeliverySink] = {}

        # Publisher confirms.
        self._seq = 0
        self._confirms: dict[int, _ConfirmWaiter] = {}
        self.max_inflight = max_inflight
        self._room_waiters: list[asyncio.Future[None]] = []
        #: The encoded Publish of each unconfirmed seq, kept only for a client
        #: that recovers (:meth:`keep_publishes`): republished after a failover.
        self._frames: dict[int, bytes] | None = None
        #: Called from ``_fail`` (before anything is failed) when the
        #: connection is lost; a recovering client takes over what it can
        #: (:meth:`hand_over`).
        self.on_lost: Callable[[Connection, BrokerError], None] | None = None

        # Settles being collected this tick, and settle frames awaiting Settled.
        self._settle_open: dict[_SettleKey, _SettleBatch] = {}
        self._settling: dict[int, _SettleBatch] = {}

        self._now = loop.time()
        self._last_recv = self._now
        self._last_write = self._now
        self._hb_handle: asyncio.TimerHandle | None = None

        self._handlers: dict[type[Frame], Callable[[Any], None]] = {
            Deliver: self._on_deliver,
            Confirm: self._on_confirm,
            Settled: self._on_settled,
            Ok: self._on_ok,
            Error: self._on_error,
            PublishError: self._on_publish_error,
            Heartbeat: _ignore,
            ConsumerCancelled: self._on_consumer_cancelled,
            Close: self._on_close,
            Welcome: self._on_welcome,
            Redirect: self._on_redirect,
        }

    # --- lifecycle -----------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        hello: Hello,
        *,
        timeout: float | None = 10.0,  # noqa: ASYNC109 - passed on from connect()
        max_inflight: int = 10_000,
        unix_path: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Connection:
        """Connect and complete the Hello/Welcome handshake within ``timeout``.

        With ``unix_path`` the connection goes to that Unix socket (a broker's
        control socket, which brokerctl uses) instead of ``host``:``port``.
        With ``ssl_context`` the connection is TLS, the broker's certificate
        checked against ``host`` (SPEC §1.1). A refusal by the broker raises
        its typed error (for example
        :class:`~brokerd_client.errors.AuthenticationError`); a TLS failure
        :class:`~brokerd_client.errors.TLSError`; a socket failure or timeout
        :class:`~brokerd_client.errors.ConnectionLost`.
        """
        loop = asyncio.get_running_loop()
        conn = cls(loop, hello, max_inflight=max_inflight)
        where = unix_path if unix_path is not None else f"{host}:{port}"
        conn._where = where
        conn._tls = ssl_context is not None
        try:
            async with asyncio.timeout(timeout):
                if unix_path is not None:
                    await loop.create_unix_connection(lambda: conn, unix_path)
                elif ssl_context is None:
                    await loop.create_connection(lambda: conn, host, port)
                else:
                    await loop.create_connection(
                        lambda: conn, host, port, ssl=ssl_context, server_hostname=host
                    )
                await conn._welcome
        except TimeoutError:
            conn._abort()
            raise ConnectionLost(
                f"timed out after {timeout}s connecting to brokerd at {where}"
            ) from None
        except ssl.SSLError as exc:
            conn._abort()
            raise tls_failure(exc, f"{host}:{port}") from exc
        except OSError as exc:
            conn._abort()
            raise ConnectionLost(f"cannot connect to brokerd at {where}: {exc}") from exc
        except BaseException:
            conn._abort()
            raise
        return conn

    @property
    def is_closed(self) -> bool:
        return self._error is not None

    @property
    def error(self) -> BrokerError | None:
        """Why the connection ended, or ``None`` while it is open."""
        return self._error

    @property
    def inflight(self) -> int:
        """Publishes sent and not yet confirmed or refused."""
        return len(self._confirms)

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - bounds the goodbye
        """Say goodbye and wait (bounded) for the broker to hang up.

        Calls still in flight fail with ``ClientClosed``. We half-close our side
        after the Close frame instead of closing the socket at once: closing a
        socket with unread incoming data makes the kernel send a reset, which
        could destroy our own Close frame before the broker reads it.
        """
        transport = self._transport
        if transport is None:
            return
        if self._error is not None:
            # Already failing (the broker closed or we hit a fatal error): the
            # transport is closing; just wait for it to finish.
            transport.close()
            try:
                await asyncio.wait_for(asyncio.shield(self._lost), timeout)
            except TimeoutError:
                transport.abort()
            return
        self._write(encode(Close(0, "client closing")))
        self._flush()
        self._fail(ClientClosed("the client was closed"))
        try:
            if transport.can_write_eof():
                transport.write_eof()
        except OSError:  # pragma: no cover - socket already dead
            pass
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), timeout)
        except TimeoutError:
            transport.abort()
        finally:
            transport.close()

    async def wait_lost(self) -> BrokerError:
        """Wait until the transport has closed; why the connection ended."""
        await asyncio.shield(self._lost)
        assert self._error is not None
        return self._error

    def _abort(self) -> None:
        if self._error is None:
            self._fail(ConnectionLost("connection aborted"))
        if self._transport is not None:
            self._transport.abort()

    # --- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        now = self._loop.time()
        self._last_recv = self._last_write = now
        transport.write(encode(self._hello))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._error is None:
            if isinstance(exc, ssl.SSLError):
                # TLS 1.3 reports a refused client certificate only after the
                # handshake, on the first read.
                self._fail(tls_failure(exc, self._where))
            elif not self._welcome.done() and not self._tls:
                self._fail(
                    ConnectionLost(
                        f"brokerd at {self._where} closed the connection before answering "
                        "Hello (if its port is TLS, connect with brokerds://)"
                    )
                )
            elif not self._welcome.done():
                self._fail(
                    TLSError(
                        f"brokerd at {self._where} closed the TLS connection before answering "
                        "Hello: it may have refused this client's certificate (brokers "
                        "started with --tls-ca accept only certificates that CA signed)"
                    )
                )
            else:
                detail = f": {exc}" if exc else ""
                self._fail(ConnectionLost(f"connection to brokerd lost{detail}"))
        self._transport = None
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def eof_received(self) -> bool | None:
        # The broker hung up; let the transport close and connection_lost report it.
        return False

    def data_received(self, data: bytes) -> None:
        self._now = self._last_recv = self._loop.time()
        if not self._welcome.done() and data[:1] in _TLS_RECORDS and not self._tls:
            # No brokerd frame starts with these (SPEC §1.1): a TLS port.
            self._fatal_because(plain_port_hint(self._where), "the broker answered with TLS")
            return
        decoder = self._decoder
        decoder.feed(data)
        handlers = self._handlers
        try:
            while self._error is None:
                frame = decoder.next_frame()
                if frame is None:
                    return
                handler = handlers.get(type(frame))
                if handler is None:
                    raise ProtocolError(f"unexpected {type(frame).__name__} frame from the broker")
                handler(frame)
        except ProtocolError as exc:
            msg = f"broker sent an invalid frame: {exc}"
            self._fatal_because(ProtocolViolation(msg, exc.code), msg)

    # --- writing -------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self._wbuf.append(data)
        self.wbuf_bytes += len(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write everything buffered this tick with one ``transport.write``."""
        self._flush_scheduled = False
        if self._settle_open:
            self._seal_settles()
        buf = self._wbuf
        if not buf:
            return
        self._wbuf = []
        self.wbuf_bytes = 0
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._last_write = self._loop.time()
        transport.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def flush(self) -> None:
        """Write now instead of at the end of the tick (bounds buffer growth)."""
        self._flush()

    def must_wait(self) -> bool:
        """True if a publisher should :meth:`wait_ready` before sending more."""
        return self._paused or len(self._confirms) >= self.max_inflight

    async def wait_ready(self) -> None:
        """Wait until the socket drains and fewer than ``max_inflight``
        publishes are unconfirmed. Raises the connection's error if it ends."""
        while True:
            self._check_open()
            if self._paused:
                waiters = self._drain_waiters
            elif len(self._confirms) >= self.max_inflight:
                waiters = self._room_waiters
            else:
                return
            fut: asyncio.Future[None] = self._loop.create_future()
            waiters.append(fut)
            await fut

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error

    # --- requests ------------------------------------------------------------

    def request(
        self, make: Callable[[int], Frame], sink: DeliverySink | None = None
    ) -> asyncio.Future[Any]:
        """Send the frame ``make(req)`` and return a future for its Ok value.

        For a Consume, ``sink`` is registered as the consumer when the Ok is
        *read*, before any Deliver that follows it in the same read, so no
        delivery can arrive for a consumer the client does not know yet.
        """
        self._check_open()
        req = next(self._req_ids)
        frame = make(req)
        data = encode(frame)
        if len(data) - HEADER_SIZE > self.max_frame:
            raise self._too_large(f"{type(frame).__name__} frame", len(data) - HEADER_SIZE)
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending[req] = fut
        if sink is not None:
            self._consume_sinks[req] = sink
        # A request may depend on acks issued just before it (cancel, delete):
        # keep them ahead of it on the wire.
        if self._settle_open:
            self._seal_settles()
        self._write(data)
        return fut

    def _too_large(self, what: str, size: int) -> MessageTooLarge:
        """The error for a frame the broker would refuse by closing the connection."""
        return MessageTooLarge(
            f"{what} of {size} bytes exceeds the limit of {self.max_frame} bytes "
            "(the broker's max_frame); nothing was sent",
            size=size,
            limit=self.max_frame,
        )

    def set_frame_handler(
        self, frame_type: type[Frame], handler: Callable[[Any], None] | None
    ) -> None:
        """Route pushed frames of ``frame_type`` (e.g. the task layer's Event)
        to ``handler``, called synchronously as each frame is read; ``None``
        removes it. Frames without a handler are a protocol error, as SPEC
        §14 requires for task-layer frames a client does not implement."""
        if frame_type in _CORE_FRAMES:
            raise ValueError(f"{frame_type.__name__} frames are handled by the connection")
        if handler is None:
            self._handlers.pop(frame_type, None)
        else:
            self._handlers[frame_type] = handler

    def forget_consumer(self, consumer_id: int) -> None:
        self._consumers.pop(consumer_id, None)

    # --- publishing ----------------------------------------------------------

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        props: dict[str, Any],
        batch: PublishBatch | None = None,
    ) -> asyncio.Future[bool] | None:
        """Queue one Publish; return a future for its confirm, or record the
        outcome in ``batch`` (and return None) for ``publish_many``."""
        self._check_open()
        if len(body) > self.max_frame:  # refused before a copy of it is encoded
            raise self._too_large("message", len(body))
        seq = self._seq + 1
        data = encode(Publish(seq, exchange, routing_key, body, props))
        if len(data) - HEADER_SIZE > self.max_frame:
            raise self._too_large("message (with its headers)", len(data) - HEADER_SIZE)
        self._seq = seq
        self._write(data)
        frames = self._frames
        if frames is not None:
            frames[seq] = data
        if batch is None:
            fut: asyncio.Future[bool] = self._loop.create_future()
            self._confirms[seq] = fut
            return fut
        self._confirms[seq] = batch
        batch.add(seq)
        return None

    # --- settling ------------------------------------------------------------

    def settle(
        self,
        kind: int,
        delivery_id: int,
        *,
        requeue: bool = True,
        number: float | None = None,
        wait: bool = True,
    ) -> asyncio.Future[None] | None:
        """Add a delivery to this tick's settle frame of the same kind.

        Returns a future that fails with ``LeaseLost`` if the broker reports
        the lease lost, or None when ``wait`` is false (fire-and-forget).
        On a connection that was lost while its client recovers (``on_lost``
        set) the settle is a no-op: the delivery's message returns to its
        queue by itself, so its future resolves at once.
        """
        if self._error is not None:
            return self._settle_gone(delivery_id, wait)
        key = (kind, requeue, number)
        batch = self._settle_open.get(key)
        if batch is None:
            batch = self._settle_open[key] = _SettleBatch(kind, requeue, number)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        fut: asyncio.Future[None] | None = self._loop.create_future() if wait else None
        batch.ids.append(delivery_id)
        batch.futs.append(fut)
        if len(batch.ids) >= MAX_SETTLE_IDS:
            del self._settle_open[key]
            self._send_settle(batch)
        return fut

    def reject_because(self, delivery_id: int, reason: str) -> asyncio.Future[None]:
        """Reject one delivery with a ``reason`` the broker keeps in the
        dead-lettered message's ``x-death-detail`` header (cut to
        ``MAX_REJECT_REASON`` characters, as the broker would)."""
        if self._error is not None:
            gone = self._settle_gone(delivery_id, True)
            assert gone is not None
            return gone
        if self._settle_open:  # settles issued before this one stay ahead of it
            self._seal_settles()
        batch = _ReasonedReject(reason[:MAX_REJECT_REASON])
        fut: asyncio.Future[None] = self._loop.create_future()
        batch.ids.append(delivery_id)
        batch.futs.append(fut)
        self._send_settle(batch)
        return fut

    def _settle_gone(self, delivery_id: int, wait: bool) -> asyncio.Future[None] | None:
        """A settle of a delivery of this lost connection: its error, or,
        while the client recovers, a no-op (the message comes back anyway)."""
        if self.on_lost is None:
            assert self._error is not None
            raise self._error
        log.debug(
            "settle of delivery %s ignored: its connection was lost and the message "
            "returns to its queue",
            delivery_id,
        )
        if not wait:
            return None
        fut: asyncio.Future[None] = self._loop.create_future()
        fut.set_result(None)
        return fut

    def _seal_settles(self) -> None:
        batches = self._settle_open
        self._settle_open = {}
        for batch in batches.values():
            self._send_settle(batch)

    def _send_settle(self, batch: _SettleBatch) -> None:
        req = next(self._req_ids)
        self._settling[req] = batch
        self._write(encode(batch.frame(req)))

    # --- incoming frames -----------------------------------------------------

    def _on_deliver(self, frame: Deliver) -> None:
        sink = self._consumers.get(frame.consumer)
        if sink is not None:
            sink._on_deliver(frame, self._now)
        else:
            # A delivery for a consumer we already cancelled: hand it straight
            # back rather than let it sit leased until its lease runs out.
            self.settle(RETURN, frame.delivery, wait=False)

    def _on_confirm(self, frame: Confirm) -> None:
        confirms = self._confirms
        frames = self._frames
        for seq in frame.unroutable:
            waiter = confirms.pop(seq, None)
            if waiter is not None:
                if frames is not None:
                    frames.pop(seq, None)
                _resolve_publish(waiter, seq, False)
        for first, last in frame.ranges:
            # Clamp to what we actually sent so a bogus range cannot spin us.
            for seq in range(max(first, 1), min(last, self._seq) + 1):
                waiter = confirms.pop(seq, None)
                if waiter is not None:
                    if frames is not None:
                        frames.pop(seq, None)
                    _resolve_publish(waiter, seq, True)
        if self._room_waiters:
            self._wake_room()

    def _on_publish_error(self, frame: PublishError) -> None:
        waiter = self._confirms.pop(frame.seq, None)
        if self._frames is not None:
            self._frames.pop(frame.seq, None)
        exc = error_from_code(frame.code, frame.message)
        if waiter is not None:
            _resolve_publish(waiter, frame.seq, exc)
        # Connection-fatal codes only ever come with req=0 or in Close (SPEC
        # §6.3); here the code is just a failed publish.
        if self._room_waiters:
            self._wake_room()

    def _wake_room(self) -> None:
        # Hysteresis: wake publishers once half the window is free, so they
        # send in large batches instead of one message per confirm.
        if len(self._confirms) <= self.max_inflight // 2:
            waiters, self._room_waiters = self._room_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def _on_settled(self, frame: Settled) -> None:
        batch = self._settling.pop(frame.req, None)
        if batch is not None:
            batch.resolve(frame.lost)

    def _on_ok(self, frame: Ok) -> None:
        fut = self._pending.pop(frame.req, None)
        sink = self._consume_sinks.pop(frame.req, None)
        if sink is not None:
            consumer_id = frame.value
            if type(consumer_id) is not int:
                msg = "Consume was answered without a consumer id"
                self._fatal_because(ProtocolViolation(msg), msg)
                return
            if fut is None or fut.done():
                # The caller gave up (cancelled) before the Ok arrived: nobody
                # will read this consumer, so stop it. Deliveries already on
                # the way find no consumer and are nacked back.
                self._cancel_orphan(consumer_id)
                return
            self._consumers[consumer_id] = sink
        if fut is not None and not fut.done():
            fut.set_result(frame.value)

    def _cancel_orphan(self, consumer_id: int) -> None:
        fut = self.request(lambda req: Cancel(req, consumer_id))
        fut.add_done_callback(_retrieve)

    def _on_error(self, frame: Error) -> None:
        if frame.req == 0:
            if not self._welcome.done():
                self._welcome.set_exception(error_from_code(frame.code, frame.message))
                self._welcome.exception()
            self._fatal_from_broker(frame.code, frame.message)
            return
        self._consume_sinks.pop(frame.req, None)
        exc = error_from_code(frame.code, frame.message)
        fut = self._pending.pop(frame.req, None)
        if fut is not None:
            if not fut.done():
                fut.set_exception(exc)
        else:
            batch = self._settling.pop(frame.req, None)
            if batch is not None:
                batch.fail(exc)

    def _on_consumer_cancelled(self, frame: ConsumerCancelled) -> None:
        sink = self._consumers.pop(frame.consumer, None)
        if sink is not None:
            sink._on_broker_cancel(frame.reason)

    def _on_close(self, frame: Close) -> None:
        # SPEC §6.3: answer a Close with our own, then close the transport.
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode(Close(0, "closing")))
        if frame.code == 0:
            msg = frame.message or "no reason given"
            self._fatal(ConnectionLost(f"broker closed the connection: {msg}"))
        else:
            self._fatal_from_broker(frame.code, frame.message)

    def _on_welcome(self, frame: Welcome) -> None:
        if self._welcome.done():
            raise ProtocolError("a second Welcome frame")
        if frame.version not in SUPPORTED_VERSIONS:
            raise ProtocolError(f"broker chose unsupported protocol version {frame.version}")
        if frame.max_frame <= 0 or frame.heartbeat < 0:
            raise ProtocolError("Welcome carries invalid limits")
        self.server_name = frame.server_name
        self.heartbeat = frame.heartbeat
        self.max_frame = frame.max_frame
        # SPEC §2.1: the broker may exceed its own limit by 64 KiB (Deliver
        # envelopes), and a client must accept that.
        self._decoder.max_frame = min(
            HARD_MAX_FRAME, max(DEFAULT_MAX_FRAME, frame.max_frame + 65536)
        )
        if frame.heartbeat > 0:
            self._hb_handle = self._loop.call_later(frame.heartbeat / 2, self._heartbeat_tick)
        self._welcome.set_result(frame)

    def _on_redirect(self, frame: Redirect) -> None:
        """A standby node's answer to our Hello (SPEC §6.1): ``open`` fails
        with ``Redirected`` and ``connect`` goes where it points."""
        if self._welcome.done():
            raise ProtocolError("a Redirect frame after Welcome")
        where = frame.address or "(not known yet)"
        self._fatal(
            Redirected(
                f"brokerd at {self._where} is a standby node; the active node is at {where}",
                frame.address,
            )
        )

    # --- heartbeats ----------------------------------------------------------

    def _heartbeat_tick(self) -> None:
        """Runs every half interval: send a Heartbeat if we were quiet for half
        an interval (so the gap between our writes never exceeds one interval)
        and declare the broker dead after two intervals of silence."""
        self._hb_handle = None
        if self._error is not None:
            return
        interval = self.heartbeat
        now = self._loop.time()
        if now - self._last_recv >= 2 * interval:
            self._fatal(
                HeartbeatTimeout(
                    f"no data from brokerd for {now - self._last_recv:.3g}s "
                    f"(heartbeat interval {interval:g}s); connection presumed dead"
                )
            )
            return
        if now - self._last_write >= interval / 2 * 0.9 and not self._flush_scheduled:
            self._write(encode(Heartbeat()))
        self._hb_handle = self._loop.call_later(interval / 2, self._heartbeat_tick)

    # --- recovery (a client that reconnects by itself) ---------------------------

    def keep_publishes(self) -> None:
        """Keep each unconfirmed Publish's bytes so a recovering client can
        send it again on its next connection (no copy: the bytes written)."""
        if self._frames is None:
            self._frames = {}

    def hand_over(self) -> tuple[list[tuple[_ConfirmWaiter, bytes]], list[DeliverySink]]:
        """Give a recovering client what survives this lost connection: the
        unconfirmed publishes (waiter and frame, in seq order) and the
        consumers, which the caller of ``_fail`` then no longer fails. Settles
        in flight resolve as no-ops: their messages return to the queue."""
        confirms, self._confirms = self._confirms, {}
        frames, self._frames = self._frames or {}, {}
        publishes = [(waiter, frames[seq]) for seq, waiter in sorted(confirms.items())]
        consumers, self._consumers = list(self._consumers.values()), {}
        for batch in (*self._settle_open.values(), *self._settling.values()):
            batch.resolve([])
        self._settle_open = {}
        self._settling = {}
        return publishes, consumers

    def adopt_publishes(self, publishes: list[tuple[_ConfirmWaiter, bytes]]) -> None:
        """Send again the unconfirmed publishes of a lost connection, with
        this connection's seqs; their waiters resolve with the new confirms."""
        if not publishes:
            return
        decoder = Decoder(HARD_MAX_FRAME)
        moved: list[tuple[_ConfirmWaiter, int | None, Publish]] = []
        for waiter, data in publishes:
            decoder.feed(data)
            frame = decoder.next_frame()
            assert type(frame) is Publish
            # A batch's old seqs may equal new ones: take them all out first.
            index = waiter.take(frame.seq) if type(waiter) is PublishBatch else None
            moved.append((waiter, index, frame))
        frames = self._frames
        for waiter, index, old in moved:
            seq = self._seq + 1
            data = encode(Publish(seq, old.exchange, old.routing_key, old.body, old.props))
            self._seq = seq
            self._write(data)
            if frames is not None:
                frames[seq] = data
            self._confirms[seq] = waiter
            if type(waiter) is PublishBatch and index is not None:
                waiter.put(seq, index)

    def extension_handlers(self) -> dict[type[Frame], Callable[[Any], None]]:
        """Handlers of pushed extension frames set with ``set_frame_handler``."""
        return {
            k: v for k, v in self._handlers.items() if k not in _CORE_FRAMES and k is not Redirect
        }

    # --- failure -------------------------------------------------------------

    def _fatal_from_broker(self, code: int, message: str) -> None:
        typed = error_from_code(code, message)
        self._fatal_because(typed, f"broker closed the connection: {typed}")

    def _fatal_because(self, typed: BrokerError, message: str) -> None:
        """End the connection for ``typed``. Waiters get a ``ConnectionLost``
        (so one ``except ConnectionLost`` handles every way a connection
        dies) whose ``__cause__`` is the typed error."""
        if isinstance(typed, ConnectionLost):
            self._fatal(typed)
            return
        exc = ConnectionLost(message, typed.code)
        exc.__cause__ = typed
        self._fatal(exc)

    def _fatal(self, exc: BrokerError) -> None:
        """Fail everything with ``exc`` and drop the connection."""
        self._fail(exc)
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: BrokerError) -> None:
        """Fail every waiter with ``exc``; the first cause of death wins."""
        if self._error is not None:
            return
        self._error = exc
        if not isinstance(exc, ClientClosed):
            log.info("brokerd connection ended: %s", exc)
        if self._hb_handle is not None:
            self._hb_handle.cancel()
            self._hb_handle = None
        # Publishers wait (must_wait) instead of writing to a dead connection.
        self._paused = True
        if self.on_lost is not None and not isinstance(exc, ClientClosed):
            self.on_lost(self, exc)
        if not self._welcome.done():
            _set_exception_quietly(self._welcome, exc)
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                _set_exception_quietly(fut, exc)
        self._consume_sinks.clear()
        confirms, self._confirms = self._confirms, {}
        for seq, waiter in confirms.items():
            _resolve_publish(waiter, seq, exc)
        for batch in (*self._settle_open.values(), *self._settling.values()):
            batch.fail(exc)
        self._settle_open = {}
        self._settling = {}
        consumers, self._consumers = self._consumers, {}
        for sink in consumers.values():
            sink._on_connection_lost(exc)
        for fut in (*self._drain_waiters, *self._room_waiters):
            if not fut.done():
                _set_exception_quietly(fut, exc)
        self._drain_waiters = []
        self._room_waiters = []


def _resolve_publish(waiter: _ConfirmWaiter, seq: int, outcome: bool | BrokerError) -> None:
    if type(waiter) is PublishBatch:
        waiter.resolve(seq, outcome)
        return
    assert isinstance(waiter, asyncio.Future)
    if waiter.done():
        return
    if isinstance(outcome, BrokerError):
        _set_exception_quietly(waiter, outcome)
    else:
        waiter.set_result(outcome)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Done-callback for fire-and-forget requests: consume any exception so
    asyncio does not log it as never retrieved."""
    if not fut.cancelled():
        fut.exception()


def _ignore(frame: Frame) -> None:
    """Heartbeats need no handling: any received byte already counts as life."""
