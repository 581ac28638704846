"""One blocking brokerd connection (plain or TLS: :mod:`.stream`), for the kombu transport.

kombu drives its transports synchronously: Celery's worker reads the socket
when its event loop (the hub) says it is readable, and everything else
(declares, publishes, acks) is a blocking call. The SDK's own connection
(:mod:`brokerd_client.connection`) is an asyncio protocol, which would need a
second event loop in a thread and a hop per delivery; this module speaks the
same sans-IO codec (``brokerd_protocol``) on a socket instead.

Invariants (the transport and the lease keeper rely on them):

* **One writer at a time.** Every write goes through :meth:`_send`, which holds
  ``_wlock`` for the whole ``sendall``: frames never interleave, whichever
  thread writes (the consumer thread, pool threads acking, the lease keeper).
  A publish takes its sequence number inside the same lock, so seqs reach the
  broker in order (SPEC §10.1).
* **One reader at a time.** Reading (``read_available``, ``read_until``)
  happens under ``_rlock`` and is done by the thread that consumes: the hub,
  ``drain_events`` or a blocking call waiting for its reply. Frames read
  while waiting for something else are kept: replies in ``_replies``,
  deliveries in :attr:`deliveries` (the transport dispatches them later, never
  from inside another call), server cancels in :attr:`cancelled`.
* **Deferred settles go out before anything else.** :meth:`settle_later`
  only queues ids (under ``_wlock``); the next write of any frame, from any
  thread, sends them first in the same ``sendall``, as do :meth:`flush` and
  every blocking read (:meth:`read_until` flushes before it waits). So a
  deferred ack is never behind a later frame, and never waits while this
  connection waits for the broker.
* **Replies are matched, never assumed.** Each request registers its ``req``
  before it is written; an answer for a req nobody waits for is dropped.
  Publish outcomes are kept only for seqs someone waits for; the others are
  counted (``unconfirmed``) so fire-and-forget publishers can bound their
  window, and a refused fire-and-forget publish is logged.
* **Failure is sticky.** The first fatal error (socket error, ``Error`` with
  ``req`` 0, ``Close``, a bad frame, heartbeat silence) is kept in ``error``
  and raised by every later call, as a :class:`ConnectionLost` so kombu and
  Celery reconnect. The token is never logged or put in an error message.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final

from brokerd_protocol import (
    DEFAULT_MAX_FRAME,
    HARD_MAX_FRAME,
    HEADER_SIZE,
    MAX_HELLO_FRAME,
    MAX_SETTLE_IDS,
    SUPPORTED_VERSIONS,
    Ack,
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

from ..connection import ACK, EXTEND, NACK, REJECT, RETURN
from ..errors import (
    BrokerError,
    ClientClosed,
    ConnectionLost,
    HeartbeatTimeout,
    MessageTooLarge,
    ProtocolViolation,
    Redirected,
    TLSError,
    error_from_code,
)
from ..tls import plain_port_hint, tls_failure
from .stream import RECV_SIZE as _RECV_SIZE
from .stream import PlainStream, Stream, TLSStream

__all__ = [
    "ACK",
    "EXTEND",
    "NACK",
    "REJECT",
    "RETURN",
    "WireConnection",
]

log = logging.getLogger("brokerd_client.celery")

#: Settle kinds: the async client's (the frame a batch of delivery ids is sent in).
KIND_NAMES: Final = {ACK: "ack", NACK: "nack", REJECT: "reject", EXTEND: "extend", RETURN: "return"}

#: One ``read_available`` stops after this many bytes, so a flood of
#: deliveries cannot starve the rest of the hub.
_READ_BUDGET = 4 * 1024 * 1024


class _Outcome:
    """A publish outcome someone waits for: None until it arrives."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: bool | BrokerError | None = None


class WireConnection:
    """A connected, welcomed brokerd connection. See the module docstring."""

    def __init__(
        self, stream: Stream, welcome: Welcome, decoder: Decoder, where: str = "?"
    ) -> None:
        self._stream = stream
        #: host:port, for error messages.
        self._where = where
        self._decoder = decoder
        self.server_name = welcome.server_name
        self.heartbeat = float(welcome.heartbeat)
        #: Largest payload the broker accepts from us.
        self.max_frame = welcome.max_frame
        self._wlock = threading.Lock()
        self._rlock = threading.RLock()
        self.error: BrokerError | None = None
        now = time.monotonic()
        self.last_write = now
        self.last_recv = now

        self._req_ids = itertools.count(1)
        #: Outstanding requests: req -> its reply frame once read (None before).
        self._replies: dict[int, Ok | Error | None] = {}
        #: Settle frames awaiting Settled: req -> (kind, ids, wanted).
        self._settling: dict[int, tuple[int, list[int], bool]] = {}
        self._settled: dict[int, list[int] | BrokerError] = {}
        self._seq = 0
        self._outcomes: dict[int, _Outcome] = {}
        #: Publishes sent and not yet confirmed or refused.
        self.unconfirmed = 0
        #: Settles deferred by :meth:`settle_later`: kind -> ids (under ``_wlock``).
        self._deferred: dict[int, list[int]] = {}

        #: Deliveries read and not yet taken by the transport, in wire order.
        self.deliveries: deque[Deliver] = deque()
        #: Consumers the broker ended (their queue was deleted).
        self.cancelled: deque[ConsumerCancelled] = deque()
        #: Called (on the reader's thread) with (kind, ids) when the broker
        #: reports leases lost in a Settled nobody waits for.
        self.on_lost: Callable[[int, list[int]], None] | None = None

    # --- opening -------------------------------------------------------------

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        *,
        token: str | None,
        client_name: str = "",
        user: str | None = None,
        password: str | None = None,
        vhost: str = "/",
        heartbeat: float = 0.0,
        connect_timeout: float | None = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> WireConnection:
        """Connect (over TLS with ``ssl_context``, checking the certificate
        against ``host``), say Hello and wait for Welcome.

        Raises ``ConnectionLost`` (socket errors, timeouts), ``TLSError`` or
        the broker's typed refusal (``AuthenticationError``, ...).
        """
        where = f"{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to brokerd at {where}: {exc}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream: Stream
            if ssl_context is None:
                stream = PlainStream(sock)
            else:
                stream = _tls_handshake(sock, ssl_context, host, where, connect_timeout)
            hello = encode(
                Hello(
                    list(SUPPORTED_VERSIONS),
                    token,
                    client_name,
                    heartbeat,
                    user,
                    password,
                    vhost,
                )
            )
            if len(hello) - HEADER_SIZE > MAX_HELLO_FRAME:
                raise ValueError("the credentials and client name do not fit in a Hello frame")
            stream.sendall(hello)
            decoder = Decoder(MAX_HELLO_FRAME)
            welcome = _read_welcome(stream, decoder, where, tls=ssl_context is not None)
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        # SPEC §2.1: a server frame may exceed max_frame by 64 KiB.
        decoder.max_frame = min(HARD_MAX_FRAME, max(DEFAULT_MAX_FRAME, welcome.max_frame + 65536))
        return cls(stream, welcome, decoder, where)

    # --- writing -------------------------------------------------------------

    def fileno(self) -> int:
        return self._stream.fileno()

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def _send(self, data: bytes) -> None:
        with self._wlock:
            self._send_locked(data)

    def _send_locked(self, data: bytes) -> None:
        self._check()
        if self._deferred:
            data = self._deferred_frames() + data
        try:
            self._stream.sendall(data)
        except ssl.SSLError as exc:
            raise self._fail(tls_failure(exc, self._where)) from None
        except OSError as exc:
            lost = ConnectionLost(f"brokerd connection lost while writing: {exc}")
            raise self._fail(lost) from None
        self.last_write = time.monotonic()

    def _encoded(self, frame: Frame) -> bytes:
        data = encode(frame)
        size = len(data) - HEADER_SIZE
        if size > self.max_frame:
            raise MessageTooLarge(
                f"{type(frame).__name__} frame of {size} bytes exceeds the limit of "
                f"{self.max_frame} bytes (the broker's max_frame); nothing was sent",
                size=size,
                limit=self.max_frame,
            )
        return data

    def request(self, make: Callable[[int], Frame]) -> int:
        """Send the request ``make(req)``; :meth:`wait_reply` reads its answer."""
        req = next(self._req_ids)
        data = self._encoded(make(req))
        self._replies[req] = None
        try:
            self._send(data)
        except BaseException:
            self._replies.pop(req, None)
            raise
        return req

    def requests(self, makers: Iterable[Callable[[int], Frame]]) -> list[int]:
        """Send several requests in one write (pipelined); returns their reqs."""
        reqs: list[int] = []
        chunks: list[bytes] = []
        for make in makers:
            req = next(self._req_ids)
            chunks.append(self._encoded(make(req)))
            reqs.append(req)
        for req in reqs:
            self._replies[req] = None
        try:
            self._send(b"".join(chunks))
        except BaseException:
            for req in reqs:
                self._replies.pop(req, None)
            raise
        return reqs

    def forget(self, req: int) -> None:
        """Nobody will wait for ``req``: drop its reply, now or when it comes."""
        self._replies.pop(req, None)

    def wait_reply(self, req: int, timeout: float | None = None) -> Any:
        """The value of request ``req``'s Ok; its Error as a typed exception."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reply = self._replies.get(req)
            if reply is not None:
                del self._replies[req]
                if type(reply) is Error:
                    raise error_from_code(reply.code, reply.message)
                assert type(reply) is Ok
                return reply.value
            if req not in self._replies:
                raise RuntimeError(f"request {req} is not outstanding")
            if not self.read_until(deadline):
                self.forget(req)
                raise TimeoutError(f"no reply from brokerd within {timeout}s")

    def call(self, make: Callable[[int], Frame], timeout: float | None = None) -> Any:
        return self.wait_reply(self.request(make), timeout)

    def publish(
        self, exchange: str, routing_key: str, body: bytes, props: dict[str, Any], *, wait: bool
    ) -> int:
        """Send one Publish; with ``wait`` its outcome is kept for :meth:`wait_confirm`."""
        if len(body) > self.max_frame:  # refused before a copy of it is encoded
            raise MessageTooLarge(
                f"message of {len(body)} bytes exceeds the limit of {self.max_frame} bytes "
                "(the broker's max_frame); nothing was sent",
                size=len(body),
                limit=self.max_frame,
            )
        with self._wlock:
            seq = self._seq + 1
            data = self._encoded(Publish(seq, exchange, routing_key, body, props))
            if wait:
                self._outcomes[seq] = _Outcome()
            try:
                self._send_locked(data)
            except BaseException:
                self._outcomes.pop(seq, None)
                raise
            self._seq = seq
            self.unconfirmed += 1
        return seq

    def wait_confirm(self, seq: int, timeout: float | None = None) -> bool:
        """True once ``seq`` is committed, False if it routed nowhere; raises
        the broker's ``PublishError`` as a typed exception."""
        outcome = self._outcomes[seq]
        deadline = None if timeout is None else time.monotonic() + timeout
        while outcome.value is None:
            if not self.read_until(deadline):
                self._outcomes.pop(seq, None)
                raise TimeoutError(f"publish not confirmed by brokerd within {timeout}s")
        del self._outcomes[seq]
        if isinstance(outcome.value, BrokerError):
            raise outcome.value
        return outcome.value

    def settle(
        self,
        kind: int,
        ids: list[int],
        *,
        number: float | None = None,
        reason: str | None = None,
        wait: bool = False,
    ) -> list[int]:
        """Settle (or extend) ``ids``: frames of at most ``MAX_SETTLE_IDS`` ids,
        sent in one write. With ``wait``, read until every frame is answered
        and return the ids the broker listed as lost; else return []."""
        if not ids:
            return []
        frames: list[bytes] = []
        reqs: list[int] = []
        for start in range(0, len(ids), MAX_SETTLE_IDS):
            chunk = ids[start : start + MAX_SETTLE_IDS]
            req = next(self._req_ids)
            frames.append(encode(_settle_frame(kind, req, chunk, number, reason)))
            reqs.append(req)
            self._settling[req] = (kind, chunk, wait)
        try:
            self._send(b"".join(frames))
        except BaseException:
            for req in reqs:
                self._settling.pop(req, None)
            raise
        if not wait:
            return []
        lost: list[int] = []
        for req in reqs:
            while req not in self._settled:
                self.read_until(None)
            result = self._settled.pop(req)
            if isinstance(result, BrokerError):
                raise result
            lost.extend(result)
        return lost

    def settle_later(self, kind: int, ids: list[int]) -> None:
        """Queue ``ids`` for a settle of ``kind`` sent with the next write or
        :meth:`flush` (one frame per kind for everything queued until then)."""
        if kind == EXTEND:
            raise ValueError("an Extend carries its lease; send it with settle()")
        self._check()  # a dead connection raises now, as settle() would
        if ids:
            with self._wlock:
                self._deferred.setdefault(kind, []).extend(ids)

    def flush(self) -> None:
        """Send the deferred settles now, if any. On a connection already
        lost they are dropped (the broker returned their deliveries with it)."""
        if self._deferred:
            with self._wlock:
                if self.error is not None:
                    self._deferred.clear()
                elif self._deferred:
                    self._send_locked(b"")

    def _deferred_frames(self) -> bytes:
        """Encode (and register) the deferred settles; caller holds ``_wlock``."""
        deferred, self._deferred = self._deferred, {}
        frames: list[bytes] = []
        for kind, ids in deferred.items():
            for start in range(0, len(ids), MAX_SETTLE_IDS):
                chunk = ids[start : start + MAX_SETTLE_IDS]
                req = next(self._req_ids)
                frames.append(encode(_settle_frame(kind, req, chunk, None, None)))
                self._settling[req] = (kind, chunk, False)
        return b"".join(frames)

    def heartbeat_if_idle(self) -> None:
        """Send a Heartbeat when nothing was written for half the interval."""
        if self.heartbeat <= 0:
            return
        with self._wlock:
            if time.monotonic() - self.last_write >= self.heartbeat / 2:
                self._send_locked(encode(Heartbeat()))

    # --- reading -------------------------------------------------------------

    def read_available(self) -> bool:
        """Read and handle what the socket holds now, without blocking.
        Returns True if any bytes arrived."""
        with self._rlock:
            self._check()
            got = 0
            while got < _READ_BUDGET:
                try:
                    data = self._stream.recv_nowait()
                except ssl.SSLError as exc:
                    raise self._fail(tls_failure(exc, self._where)) from None
                except OSError as exc:
                    raise self._fail(ConnectionLost(f"brokerd connection lost: {exc}")) from None
                if data is None:
                    break
                if not data:
                    raise self._fail(ConnectionLost("brokerd closed the connection"))
                got += len(data)
                self._handle_bytes(data)
                if len(data) < _RECV_SIZE:
                    # The kernel had no more: skip the recv that would say
                    # EAGAIN (what arrives later makes the socket readable).
                    break
            return got > 0

    def read_until(self, deadline: float | None) -> bool:
        """Block until bytes arrive (and handle them) or ``deadline`` passes.

        Returns False on the deadline. Silence for two heartbeat intervals
        while waiting ends the connection (SPEC §6.2).
        """
        self.flush()  # never wait with acks of ours unsent
        with self._rlock:
            self._check()
            quiet_since = time.monotonic()
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return False
                wait = None if deadline is None else deadline - now
                if self.heartbeat > 0:
                    silence_left = quiet_since + 2 * self.heartbeat - now
                    if silence_left <= 0:
                        raise self._fail(
                            HeartbeatTimeout(
                                f"no data from brokerd for {now - quiet_since:.3g}s "
                                f"(heartbeat interval {self.heartbeat:g}s); "
                                "connection presumed dead"
                            )
                        )
                    wait = silence_left if wait is None else min(wait, silence_left)
                try:
                    readable, _, _ = select.select([self._stream.sock], [], [], wait)
                except (OSError, ValueError) as exc:
                    raise self._fail(ConnectionLost(f"brokerd connection lost: {exc}")) from None
                if readable and self.read_available():
                    return True

    def readable_now(self) -> bool:
        """True if the socket has bytes waiting (used by heartbeat checks)."""
        try:
            readable, _, _ = select.select([self._stream.sock], [], [], 0)
        except (OSError, ValueError):
            return True  # let the next read report the failure
        return bool(readable)

    def _handle_bytes(self, data: bytes) -> None:
        self.last_recv = time.monotonic()
        decoder = self._decoder
        decoder.feed(data)
        try:
            while True:
                frame = decoder.next_frame()
                if frame is None:
                    return
                self._handle(frame)
        except ProtocolError as exc:
            msg = f"brokerd sent an invalid frame: {exc}"
            violation = ProtocolViolation(msg, exc.code)
            lost = ConnectionLost(msg, exc.code)
            lost.__cause__ = violation
            raise self._fail(lost) from None

    def _handle(self, frame: Frame) -> None:
        kind = type(frame)
        if kind is Deliver:
            assert isinstance(frame, Deliver)
            self.deliveries.append(frame)
        elif kind is Confirm:
            assert isinstance(frame, Confirm)
            self._on_confirm(frame)
        elif kind is Settled:
            assert isinstance(frame, Settled)
            self._on_settled(frame.req, frame.lost)
        elif kind is Ok or kind is Error:
            assert isinstance(frame, Ok | Error)
            self._on_reply(frame)
        elif kind is PublishError:
            assert isinstance(frame, PublishError)
            self._on_publish_error(frame)
        elif kind is Heartbeat:
            pass
        elif kind is ConsumerCancelled:
            assert isinstance(frame, ConsumerCancelled)
            self.cancelled.append(frame)
        elif kind is Close:
            assert isinstance(frame, Close)
            self._on_close(frame)
        else:
            raise ProtocolError(f"unexpected {kind.__name__} frame from the broker")

    def _on_confirm(self, frame: Confirm) -> None:
        outcomes = self._outcomes
        for seq in frame.unroutable:
            if 0 < seq <= self._seq:
                self.unconfirmed -= 1
                waiter = outcomes.get(seq)
                if waiter is not None:
                    waiter.value = False
        for first, last in frame.ranges:
            # Clamp to what was sent, so a bogus range cannot spin us.
            low, high = max(first, 1), min(last, self._seq)
            if high < low:
                continue
            self.unconfirmed -= high - low + 1
            if outcomes:
                for seq in range(low, high + 1):
                    waiter = outcomes.get(seq)
                    if waiter is not None:
                        waiter.value = True

    def _on_publish_error(self, frame: PublishError) -> None:
        self.unconfirmed -= 1
        exc = error_from_code(frame.code, frame.message)
        waiter = self._outcomes.get(frame.seq)
        if waiter is not None:
            waiter.value = exc
        else:
            log.error("brokerd refused a publish nobody waited for (seq %d): %s", frame.seq, exc)

    def _on_settled(self, req: int, lost: list[int]) -> None:
        entry = self._settling.pop(req, None)
        if entry is None:
            return
        kind, _ids, wanted = entry
        if wanted:
            self._settled[req] = lost
        elif lost and self.on_lost is not None:
            self.on_lost(kind, lost)

    def _on_reply(self, frame: Ok | Error) -> None:
        req = frame.req
        if type(frame) is Error and req == 0:
            typed = error_from_code(frame.code, frame.message)
            lost = typed if isinstance(typed, ConnectionLost) else None
            if lost is None:
                lost = ConnectionLost(f"brokerd closed the connection: {typed}", typed.code)
                lost.__cause__ = typed
            raise self._fail(lost)
        if req in self._replies:
            self._replies[req] = frame
            return
        entry = self._settling.pop(req, None)
        if entry is not None and type(frame) is Error:
            exc = error_from_code(frame.code, frame.message)
            if entry[2]:
                self._settled[req] = exc
            else:
                log.warning("brokerd refused a %s: %s", KIND_NAMES[entry[0]], exc)

    def _on_close(self, frame: Close) -> None:
        with contextlib.suppress(BrokerError):
            self._send(encode(Close(0, "closing")))
        if frame.code == 0:
            exc = ConnectionLost(f"brokerd closed the connection: {frame.message or 'no reason'}")
        else:
            typed = error_from_code(frame.code, frame.message)
            exc = ConnectionLost(f"brokerd closed the connection: {typed}", typed.code)
            exc.__cause__ = typed
        raise self._fail(exc)

    # --- ending --------------------------------------------------------------

    def _fail(self, exc: BrokerError) -> BrokerError:
        """Record the first fatal error, close the socket, return what to raise."""
        if self.error is None:
            self.error = exc
            if not isinstance(exc, ClientClosed):
                log.info("brokerd connection ended: %s", exc)
            with contextlib.suppress(OSError):
                self._stream.close()
        return self.error

    def close(self) -> None:
        """Orderly close: send Close, then drop the socket."""
        if self.error is not None:
            return
        with contextlib.suppress(BrokerError):
            self._send(encode(Close(0, "client closing")))
        self._fail(ClientClosed("connection closed by the application"))

    def detach(self) -> None:
        """Drop this process's handle on the socket without a word to the
        broker (after fork: the parent still owns the connection)."""
        if self.error is None:
            self.error = ClientClosed("connection released after fork")
            # Closing our copy of the descriptor sends nothing; the parent's
            # copy keeps the connection open.
            with contextlib.suppress(OSError):
                self._stream.close()


def _settle_frame(
    kind: int, req: int, ids: list[int], number: float | None, reason: str | None
) -> Frame:
    if kind == ACK:
        return Ack(req, ids)
    if kind == NACK:
        return Nack(req, ids, True, number)
    if kind == RETURN:
        return Nack(req, ids, True, None, counted=False)
    if kind == REJECT:
        return Reject(req, ids, reason)
    assert number is not None
    return Extend(req, ids, number)


def _tls_handshake(
    sock: socket.socket, context: ssl.SSLContext, host: str, where: str, timeout: float | None
) -> TLSStream:
    try:
        return TLSStream.handshake(sock, context, host, timeout)
    except ssl.SSLError as exc:
        raise tls_failure(exc, where) from None
    except TimeoutError:
        raise ConnectionLost(f"timed out in the TLS handshake with brokerd at {where}") from None
    except OSError as exc:
        raise TLSError(
            f"TLS handshake with brokerd at {where} failed: {exc} (is its port TLS? "
            "brokerd is started with --tls-cert/--tls-key to serve brokerds://)"
        ) from None


def _read_welcome(stream: Stream, decoder: Decoder, where: str, *, tls: bool) -> Welcome:
    first = True
    while True:
        try:
            data = stream.recv()
        except ssl.SSLError as exc:
            raise tls_failure(exc, where) from None
        except OSError as exc:
            raise ConnectionLost(f"brokerd at {where} did not answer Hello: {exc}") from None
        if not data:
            if tls:
                raise TLSError(
                    f"brokerd at {where} closed the TLS connection during Hello: it may have "
                    "refused this client's certificate (brokers started with --tls-ca accept "
                    "only certificates that CA signed)"
                )
            raise ConnectionLost(
                f"brokerd at {where} closed the connection during Hello "
                "(if its port is TLS, connect with brokerds://)"
            )
        if first and not tls and data[:1] in (b"\x15", b"\x16"):
            raise plain_port_hint(where)
        first = False
        decoder.feed(data)
        try:
            frame = decoder.next_frame()
        except ProtocolError as exc:
            raise ProtocolViolation(f"brokerd sent an invalid frame: {exc}", exc.code) from None
        if frame is None:
            continue
        if type(frame) is Error:
            raise error_from_code(frame.code, frame.message)
        if type(frame) is Redirect:  # a standby node (SPEC §6.1)
            raise Redirected(
                f"brokerd at {where} is a standby node; the active node is at "
                f"{frame.address or '(not known yet)'}",
                frame.address,
            )
        if type(frame) is not Welcome:
            raise ProtocolViolation(f"expected Welcome, got {type(frame).__name__}")
        if frame.version not in SUPPORTED_VERSIONS:
            raise ProtocolViolation(f"brokerd chose unsupported protocol version {frame.version}")
        if frame.max_frame <= 0 or frame.heartbeat < 0:
            raise ProtocolViolation("Welcome carries invalid limits")
        return frame
