"""The TLS handshake of one accepted connection, inside the handshake pool.

Why not ``create_server(ssl=...)``: there the event loop runs the TLS
handshake before the protocol hears of the connection at all, so a peer that
opens connections and never finishes TLS holds a socket and an ``SSLObject``
each without counting against ``--max-handshakes``, and the broker has no
handle to drop it by. Here the listener is plain TCP and each connection
starts as a ``TLSAccept``: admitted to the same pool as connections in the
protocol handshake at once (``Host.enter_pool``), then upgraded with
``loop.start_tls``. When the pool is full it can be pushed out like any
other member (``fail``), and the pool's deadline (``handshake_timeout`` from
the accept) drops it (``handshake_expired``); both abort the raw socket.

Invariants:

* **One pool, one clock.** ``connected_at`` is the accept time and the
  session made after TLS keeps it, so TLS never extends the handshake
  deadline; TLS and the brokerd Hello together must fit in it.
* **Nothing is read before TLS.** Reading is paused from ``connection_made``
  until ``start_tls`` takes the raw transport over.
* **No plaintext is lost at the hand-over.** Decrypted bytes (or the end of
  the stream) that arrive after the handshake but before the session is
  attached are kept here and replayed to the session in order.
* One task per connection lives only for the TLS handshake; nothing of this
  module is on the path of a welcomed connection's frames.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Protocol, cast

from brokerd_protocol import ErrorCode

__all__ = ["TLSAccept"]

log = logging.getLogger("brokerd.tls")

#: Raw bytes kept from before the TLS protocol took the socket; a
#: ClientHello is a few KiB.
MAX_EARLY_RAW = 256 * 1024


class Handoff(Protocol):
    """The session a finished TLS handshake is handed to."""

    connected_at: float

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool | None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...


class Host(Protocol):
    """What the listener provides (``BrokerServer``)."""

    def enter_pool(self, member: TLSAccept) -> None: ...

    def leave_pool(self, member: TLSAccept) -> None: ...


class TLSAccept(asyncio.Protocol):
    """A connection whose TLS handshake has not finished (module docstring)."""

    def __init__(
        self,
        host: Host,
        context: ssl.SSLContext,
        timeout: float,
        make_session: Callable[[], Handoff],
    ) -> None:
        self.host = host
        self.context = context
        self.timeout = timeout
        self.make_session = make_session
        #: Accept time (monotonic): the pool's deadline counts from here.
        self.connected_at = time.monotonic()
        self.peer_name = "?"
        self._raw: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._dropped = False
        #: Plaintext that arrived between the handshake and the hand-over.
        self._early: list[bytes] = []
        self._eof = False
        self._lost: list[Exception | None] = []
        #: start_tls has the raw transport (callbacks here are TLS ones now).
        self._wrapped = False
        #: Raw bytes read before that (a ClientHello), for the TLS protocol.
        self._early_raw: list[bytes] = []
        self._early_raw_bytes = 0

    # --- the raw transport, until start_tls takes it -----------------------------
    # The same callbacks serve two transports: the raw one until ``_handshake``
    # hands it to ``start_tls`` (``_wrapped`` false), then the TLS one until the
    # session takes it over.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)
        self._raw = raw
        peer = transport.get_extra_info("peername")
        self.peer_name = f"{peer[0]}:{peer[1]}" if peer else "?"
        # Not every loop honours this before it has started reading (uvloop
        # starts after connection_made returns): bytes read before start_tls
        # takes the transport are kept in ``_early_raw`` and given to it.
        raw.pause_reading()
        self.host.enter_pool(self)
        self._task = asyncio.get_running_loop().create_task(self._handshake(raw))

    def data_received(self, data: bytes) -> None:
        if self._wrapped:
            self._early.append(data)
            return
        self._early_raw_bytes += len(data)
        if self._early_raw_bytes > MAX_EARLY_RAW:
            self._drop()
            return
        self._early_raw.append(data)

    def eof_received(self) -> bool:
        if not self._wrapped:
            return False  # a peer gone before TLS started: close
        self._eof = True
        return True  # the session decides, once it has the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._wrapped:
            self._dropped = True
            return
        self._lost.append(exc)

    # --- the pool's two ways out ---------------------------------------------------

    def fail(self, code: ErrorCode, message: str) -> None:
        """Pushed out of a full pool (no TLS yet, so no frame can tell why)."""
        log.info("closing %s during TLS: %s (%s)", self.peer_name, message, code.name)
        self._drop()

    def handshake_expired(self, timeout: float) -> None:
        log.info("closing %s: TLS not finished within %g s of connect", self.peer_name, timeout)
        self._drop()

    def _drop(self) -> None:
        self._dropped = True
        if self._raw is not None:
            self._raw.abort()

    def _give_early_raw(self, raw: asyncio.Transport) -> None:
        """Hand raw bytes read before start_tls to the TLS protocol, which
        keeps what it receives before its own connection_made."""
        early, self._early_raw = self._early_raw, []
        if not early or raw.is_closing():
            return
        tls = raw.get_protocol()
        data = memoryview(b"".join(early))
        if isinstance(tls, asyncio.BufferedProtocol) or hasattr(tls, "get_buffer"):
            buffered = cast(asyncio.BufferedProtocol, tls)
            while data:
                buf = memoryview(buffered.get_buffer(len(data))).cast("B")
                n = min(len(buf), len(data))
                buf[:n] = data[:n]
                buffered.buffer_updated(n)
                data = data[n:]
        else:
            cast(asyncio.Protocol, tls).data_received(bytes(data))

    # --- the upgrade ---------------------------------------------------------------

    async def _handshake(self, raw: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        if self._dropped:
            self.host.leave_pool(self)
            raw.abort()
            return
        left = max(self.timeout - (time.monotonic() - self.connected_at), 0.001)
        # start_tls swaps the raw transport's protocol before its first await;
        # this runs after that, before the TLS protocol reads anything itself.
        loop.call_soon(self._give_early_raw, raw)
        self._wrapped = True
        try:
            app = await loop.start_tls(
                raw, self, self.context, server_side=True, ssl_handshake_timeout=left
            )
        except Exception as exc:  # TLS refused, reset, timed out, or dropped by the pool
            self.host.leave_pool(self)
            if not self._dropped:
                log.debug("TLS handshake with %s failed: %s", self.peer_name, exc)
            raw.abort()
            return
        self.host.leave_pool(self)
        if app is None or self._dropped:
            raw.abort()
            return
        session = self.make_session()
        session.connected_at = self.connected_at
        app.set_protocol(cast(asyncio.BaseProtocol, session))
        session.connection_made(app)
        if self._early:
            session.data_received(b"".join(self._early))
        if self._eof and not session.eof_received():
            app.close()
        for lost in self._lost:
            session.connection_lost(lost)
