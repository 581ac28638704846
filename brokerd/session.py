"""One client connection: bytes in, frames to the broker core, frames out.

An ``asyncio.Protocol`` rather than streams: ``data_received`` decodes and
handles every complete frame synchronously, and all frames produced during
one event-loop tick (deliveries, confirms, replies) are joined into a single
``transport.write``.

This is the one boundary where failures become wire frames, for the core's
requests and the extensions' alike (``_failed``; docs/ARCHITECTURE.md,
Errors): a ``BrokerError`` answers its request with its code, any other
exception in a handler is logged and answers ``INTERNAL`` with the connection
left open, and only a ``ProtocolError`` ends the connection.

The session knows the server only as a ``Host`` and the core only as a
``Broker``; the server is the one that imports this module.

Until Welcome the decoder accepts only ``MAX_HELLO_FRAME`` bytes per frame
(SPEC §2.1), so an unauthenticated peer cannot make us buffer a full-size
frame; the limit is raised to ``max_frame`` when the handshake succeeds.

A connection's first bytes are sniffed before the decoder sees them
(``foreign.sniff``): a peer speaking AMQP, HTTP or TLS is answered in its own
protocol by a ``foreign.Refusal`` and never gets a brokerd frame.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Protocol, cast

import brokerd_protocol as bp
from brokerd_protocol import ErrorCode, ProtocolError

from .auth import Access, Users, Verifier
from .auth.users import ADMINISTRATOR, User
from .broker import Broker
from .config import Config
from .errors import BrokerError
from .flow import FlowControl, Share
from .foreign import MORE, SNIFF_BYTES, Foreign, Next, Refusal, sniff
from .outbox import Outbox
from .queues import Consumer, Delivery
from .storage.base import Batch
from .throttle import AuthThrottle
from .tls import certificate_user
from .vhosts import DEFAULT_NAMES, DEFAULT_VHOST, Names, Registry

log = logging.getLogger("brokerd.session")

_encode_deliver = bp.encode_deliver
#: Shortest heartbeat interval the server agrees to.
MIN_HEARTBEAT = 0.5
#: What a request that failed unexpectedly is told (the traceback is in the log).
INTERNAL_MESSAGE = "internal error; see the broker log"

#: A request handler, core or extension: called with the session and the frame.
Handler = Callable[["Session", Any], None]
Handlers = Mapping[type[bp.Frame], Handler]


class Host(Protocol):
    """What a session needs of the server that accepted it (``BrokerServer``).

    As the core knows a connection only as a ``Peer``, a session knows its
    server only through this, so the server can import the session and not
    the other way round.
    """

    @property
    def broker(self) -> Broker: ...

    @property
    def config(self) -> Config: ...

    @property
    def flow(self) -> FlowControl: ...

    @property
    def auth_throttle(self) -> AuthThrottle: ...

    @property
    def users(self) -> Users: ...

    @property
    def verifier(self) -> Verifier: ...

    @property
    def vhosts(self) -> Registry: ...

    @property
    def loopback_only(self) -> bool:
        """The broker port listens on loopback addresses only."""
        ...

    @property
    def handlers(self) -> Handlers:
        """Every request frame's handler: the core's and the extensions'."""
        ...

    @property
    def standby_redirect(self) -> str | None:
        """The active node's address while this node stands by, else None."""
        ...

    def admit(self, session: Session) -> None: ...

    def authenticate(self, session: Session) -> bool: ...

    def handshake_dropped(self, reason: str) -> None: ...

    def wrong_protocol(self, session: Session, foreign: Foreign) -> Refusal:
        """Count and (rate-limited) log a peer speaking ``foreign``; its answer."""
        ...

    def forget(self, session: Session) -> None: ...

    @property
    def outbox(self) -> Outbox:
        """Where a session that queued frames waits to be written."""
        ...


def failure_reply(frame: bp.Frame | None, exc: Exception, peer: str = "?") -> bp.Frame:
    """The frame that answers ``frame``'s handler raising ``exc``: the error rule.

    ``BrokerError`` keeps its code and message; anything else is a bug of
    ours, logged here with its traceback (once) and answered ``INTERNAL``,
    whose effect SPEC §12 calls unknown. A publish is answered with
    ``PublishError`` for its ``seq``, a request with ``Error`` for its ``req``.
    What has neither (the handshake, a heartbeat, no frame at all) can only
    be answered with ``Error(req=0)``, which ends the connection (SPEC §6.3).
    """
    if isinstance(exc, BrokerError):
        code, message = exc.code, exc.message
    else:
        what = type(frame).__name__ if frame is not None else "a read"
        log.error("internal error handling %s from %s", what, peer, exc_info=exc)
        code, message = ErrorCode.INTERNAL, INTERNAL_MESSAGE
    if type(frame) is bp.Publish:
        return bp.PublishError(frame.seq, int(code), message)
    return bp.Error(getattr(frame, "req", 0), int(code), message)


def _ranges(seqs: list[int]) -> list[list[int]]:
    seqs.sort()
    out: list[list[int]] = []
    for s in seqs:
        if out and out[-1][1] + 1 == s:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


class Session(asyncio.Protocol):
    """One connection. ``local`` marks one accepted on the control socket
    (``control.py``): the OS already let its peer open a mode-0600 socket in
    the data dir, so it is trusted as the broker's own user, without a token,
    and may use the admin frames (SPEC §17), unless its Hello names a user:
    then it has that user's rights, once the password is checked.

    Rights (docs/security.md): ``access`` is None for a session that may do
    everything (the token, the control socket, a broker without users on
    loopback), else the user's compiled permissions, checked on every frame
    after Welcome before its handler runs."""

    def __init__(self, host: Host, *, local: bool = False) -> None:
        self.host = host
        self.local = local
        #: May send admin frames: a control-socket connection, or a TCP one
        #: that passed the handshake (with the token when the broker has one).
        self.admin = False
        #: The connection's number for admins (``ListConnections``), set by the host.
        self.id = 0
        #: What the client called itself in its Hello.
        self.client_name = ""
        #: The vhost this connection works in (its Hello's), and the mapping
        #: of its names in and out (``vhosts.py``).
        self.vhost = DEFAULT_VHOST
        self.names: Names = DEFAULT_NAMES
        #: The user it authenticated as (None: the token, or no credentials).
        self.user: str | None = None
        #: Its rights (None: everything); see the class docstring.
        self.access: Access | None = None
        #: The CN of its verified client certificate, with --tls-cert-login.
        self.cert_user: str | None = None
        #: A Hello whose password is being checked (off the loop).
        self._verifying = False
        #: Wall-clock time of the connect (epoch seconds), for admins.
        self.connected_wall = time.time()
        self.broker: Broker = host.broker
        self.config: Config = host.config
        self.decoder = bp.Decoder(min(host.config.max_frame, bp.MAX_HELLO_FRAME))
        self.transport: asyncio.Transport | None = None
        self.conn = self.broker.open(self)
        self.authenticated = False
        #: When the connection was accepted (monotonic; the listener makes the
        #: session at accept, also before a TLS handshake): the handshake
        #: deadline counts from here, not from the last byte received.
        self.connected_at = time.monotonic()
        #: The peer's host, the key of the failed-authentication throttle.
        self.peer_host = "?"
        #: A Hello waiting for its address's turn to have its token checked.
        self._held_hello: bp.Hello | None = None
        self._hello_timer: asyncio.TimerHandle | None = None
        self.writable = True
        self.heartbeat = 0.0
        self.last_recv = time.monotonic()
        self.last_send = self.last_recv
        self.peer_name = "?"
        #: The address the peer reached us on (told to wrong-protocol peers).
        self.local_host = "127.0.0.1"
        self.local_port = 0
        #: The first bytes, until ``foreign.sniff`` has decided (None after).
        self._sniffed: bytes | None = b""
        #: The answer to a peer that speaks another protocol.
        self._refusal: Refusal | None = None
        self._hung_up = False
        self.bytes_in = 0
        self.bytes_out = 0
        self._out: list[bytes] = []
        #: Listed in the outbox: its queued frames wait for a drain (``outbox.py``).
        self._in_outbox = False
        self._outbox = host.outbox
        self._closing = False
        self._reading_paused = False
        #: Why we are not reading this connection (``flow`` bits; 0 = no reason).
        self.holds = 0
        #: Body bytes this connection published that are not yet committed.
        self.uncommitted = 0
        self._share: Share | None = None
        self._published = False
        self._loop = asyncio.get_running_loop()

    # --- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; duck-type them.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if self.local:
            self.peer_name = self.peer_host = "local"
        else:
            self.peer_name = f"{peer[0]}:{peer[1]}" if peer else "?"
            self.peer_host = str(peer[0]) if peer else "?"
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple) and len(local) >= 2:
            self.local_host, self.local_port = str(local[0]), int(local[1])
        # ``connected_at`` stays the accept time set in __init__: over TLS this
        # runs only after the TLS handshake, which must not extend the deadline.
        self.transport.set_write_buffer_limits(high=self.config.max_write_buffer)
        self.host.admit(self)
        if self.config.tls_ca is not None and not transport.get_extra_info("peercert"):
            # mTLS: the handshake verified any certificate given (brokerd/tls.py).
            self.fail(
                ErrorCode.AUTH_FAILED,
                "this broker requires a TLS client certificate signed by its --tls-ca; "
                "connect with certfile= and keyfile=",
            )
        elif self.config.tls_cert_login:
            self.cert_user = certificate_user(transport.get_extra_info("peercert"))

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._sniffed is not None:
            sniffed = self._sniff(data)
            if sniffed is None:
                self.bytes_in += len(data)
                return
            self.bytes_in -= len(sniffed) - len(data)  # the bytes held were counted
            data = sniffed
        if self._held_hello is not None:
            self.fail(ErrorCode.NOT_AUTHENTICATED, "frames sent before Welcome")
            return
        self.last_recv = time.monotonic()
        self.bytes_in += len(data)
        if self.conn.stalled:  # a lease of ours ran out, but we are alive
            self.broker.heard_from(self.conn)
        batch = self.broker.batch
        before = batch.nbytes
        decoder = self.decoder
        decoder.feed(data)
        publish = self._on_publish
        handlers = self.host.handlers
        try:
            while True:
                if self._closing:  # a handler failed the connection: read no further
                    return
                frame = decoder.next_frame()
                if frame is None:
                    break
                try:
                    if type(frame) is bp.Publish:
                        publish(frame)
                    elif not self.authenticated:
                        self._on_hello(frame)
                        if self._held_hello is not None and decoder.buffered:
                            self.fail(ErrorCode.NOT_AUTHENTICATED, "frames sent before Welcome")
                    else:
                        handler = handlers.get(type(frame))
                        if handler is None:
                            raise ProtocolError(f"{type(frame).__name__} is not a client frame")
                        if getattr(frame, "req", 1) <= 0:
                            raise ProtocolError("request ids must be positive")
                        if self.access is not None:
                            self.access.check(frame)
                        handler(self, frame)
                except ProtocolError:
                    raise
                except Exception as exc:
                    self._failed(frame, exc)
        except ProtocolError as exc:
            message = str(exc)
            if isinstance(exc, bp.FrameTooLarge) and not self.authenticated:
                message += " before Welcome (SPEC §2.1)"
            self.fail(exc.code, message)
            return
        except Exception as exc:  # the decoder itself: its state is unknown, so end here
            self._failed(None, exc)
            return
        # Replies to what we just read go out now rather than one loop
        # iteration later: that halves a request's round trip.
        if self._out:
            self.write_out()
        after = self.broker.batch
        added = after.nbytes - before if after is batch else after.nbytes
        if added > 0:
            self._charge(after, added)
        if self.uncommitted and not self._closing:
            self.host.flow.after_read(self)

    def _sniff(self, data: bytes) -> bytes | None:
        """Hold the first bytes until ``sniff`` decides; the bytes for the
        decoder once it has, None while undecided or for a foreign peer."""
        if self._refusal is not None:
            if not self._hung_up:
                self._refused(data)
            return None  # after hanging up: discarded until the peer closes
        assert self._sniffed is not None
        head = self._sniffed + data
        verdict = sniff(head[:SNIFF_BYTES])
        if verdict is MORE:
            self._sniffed = head
            return None
        if isinstance(verdict, Foreign):
            self._refusal = self.host.wrong_protocol(self, verdict)
            self._refused(head)
            return None
        self._sniffed = None
        return head

    def _refused(self, data: bytes) -> None:
        """Feed a foreign peer's bytes to its refusal and do what it says."""
        assert self._refusal is not None and self.transport is not None
        reply, then = self._refusal.received(data)
        if reply:
            self.write(reply)
        if then is Next.LISTEN:
            return
        if then is Next.CLOSE:
            self.close_after_flush()
            return
        # Everything is said: the peer reads it before our EOF, and we read
        # (and drop) whatever it still sends, so closing never resets the
        # connection under an unread reply. Its EOF closes (``eof_received``);
        # the handshake deadline bounds the wait.
        self._hung_up = True
        self.write_out()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.close_after_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        self.broker.close(self.conn)
        self.host.forget(self)

    def pause_writing(self) -> None:
        # A peer that does not read what we send gets no deliveries, and we
        # stop reading its requests: their replies would pile up here too.
        self.writable = False
        self._set_reading()

    def resume_writing(self) -> None:
        self.writable = True
        self._set_reading()
        self.broker.resume(self.conn)

    # --- flow control (the rules are in flow.py) --------------------------------

    def _charge(self, batch: Batch, nbytes: int) -> None:
        """Count ``nbytes`` of this read's publishes against ``batch``'s commit."""
        share = self._share
        if share is None or share.batch is not batch:
            if not self._published:
                self._published = True
                self.host.flow.first_publish(self)
            share = self._share = Share(batch)
            batch.after_commit(partial(self._settled, share), durable=False)
        share.nbytes += nbytes
        self.uncommitted += nbytes

    def _settled(self, share: Share, error: BaseException | None) -> None:
        share.batch = None  # the batch is done: hold no reference to it
        if self._share is share:
            self._share = None
        self.uncommitted -= share.nbytes
        self.host.flow.settled(self)

    def hold(self, reason: int) -> None:
        """Stop reading for ``reason`` (a ``flow`` bit) until it is released."""
        if not self.holds & reason:
            self.holds |= reason
            self._set_reading()

    def release(self, reason: int) -> None:
        if self.holds & reason:
            self.holds &= ~reason
            self._set_reading()

    @property
    def commit_paused(self) -> bool:
        """Held by us (commits, disk): the peer's silence is not its fault."""
        return bool(self.holds)

    def _set_reading(self) -> None:
        """Read from the socket unless we hold it or the peer is not reading."""
        if self.transport is None or self._closing:
            return
        want_paused = bool(self.holds) or not self.writable
        if want_paused and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        elif not want_paused and self._reading_paused:
            self._reading_paused = False
            # Time spent paused by us is not the peer's silence.
            self.last_recv = time.monotonic()
            self.transport.resume_reading()

    # --- output -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._in_outbox:
            self._in_outbox = True
            self._outbox.add(self)

    def send(self, frame: bp.Frame) -> None:
        self.write(bp.encode(frame))

    def write_out(self) -> None:
        self._in_outbox = False
        if not self._out or self.transport is None or self.transport.is_closing():
            self._out.clear()
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        self.bytes_out += len(data)
        self.last_send = time.monotonic()
        self.transport.write(data)

    def fail(self, code: ErrorCode, message: str) -> None:
        """Send a connection-level error and close after it is written."""
        if self._closing:
            return
        if self._refusal is not None:  # it does not read our frames: just close
            self.close_after_flush()
            return
        log.info("closing %s: %s (%s)", self.peer_name, message, code.name)
        self.send(bp.Error(0, int(code), message))
        self.close_after_flush()

    def close_after_flush(self) -> None:
        self._closing = True
        self.write_out()
        if self.transport is not None:
            self.transport.close()

    def close_by_admin(self, reason: str) -> None:
        """End the connection at an administrator's request: ``Close(0,
        reason)``, then close once it is written (SPEC §17.5)."""
        if self._closing:
            return
        log.info("closing %s at an administrator's request: %s", self.peer_name, reason)
        self.send(bp.Close(0, reason))
        self.close_after_flush()

    def reply_ok(self, req: int, value: Any = None) -> None:
        self.send(bp.Ok(req, value))

    def reply_error(self, req: int, exc: BrokerError) -> None:
        self.send(bp.Error(req, int(exc.code), self.names.text_out(exc.message)))

    def _failed(self, frame: bp.Frame | None, exc: Exception) -> None:
        """Apply the error rule (``failure_reply``) to a handler that raised."""
        reply = failure_reply(frame, exc, self.peer_name)
        if self.names.prefix:
            if type(reply) is bp.PublishError:
                reply = bp.PublishError(reply.seq, reply.code, self.names.text_out(reply.message))
            elif type(reply) is bp.Error:
                reply = bp.Error(reply.req, reply.code, self.names.text_out(reply.message))
        if type(reply) is bp.Error and reply.req == 0:
            self.fail(ErrorCode(reply.code), reply.message)
        else:
            self.send(reply)

    # --- Peer interface (called by the broker core) ------------------------------

    def send_delivery(self, consumer: Consumer, d: Delivery) -> None:
        m = d.message
        props: dict[str, Any] = {"timestamp": m.timestamp}
        if m.headers:
            props["headers"] = m.headers
        if m.message_id is not None:
            props["message_id"] = m.message_id
        if m.priority:
            props["priority"] = m.priority
        if m.attempts:
            props["redelivered"] = True
        exchange, routing_key = m.exchange, m.routing_key
        names = self.names
        if names.prefix:  # a vhost's names, as its clients know them
            exchange, routing_key = names.route_out(exchange, routing_key)
            dead = m.headers.get("x-death-queue") if m.headers else None
            if isinstance(dead, str):
                props["headers"] = {**props["headers"], "x-death-queue": names.out(dead)}
        # ``write`` inlined: one call per delivery (the encoder), as when the
        # frame was packed here by hand.
        self._out.append(
            _encode_deliver(
                consumer.id,
                d.id,
                exchange,
                routing_key,
                m.body,
                props,
                m.attempts + 1,
                consumer.lease,
            )
        )
        if not self._in_outbox:
            self._in_outbox = True
            self._outbox.add(self)

    def send_confirms(self, routed: list[int], unroutable: list[int]) -> None:
        self.send(bp.Confirm(_ranges(routed), unroutable))

    def send_publish_error(self, seq: int, code: ErrorCode, message: str) -> None:
        self.send(bp.PublishError(seq, int(code), self.names.text_out(message)))

    def send_consumer_cancelled(self, consumer_id: int, reason: str) -> None:
        self.send(bp.ConsumerCancelled(consumer_id, self.names.text_out(reason)))

    # --- handshake --------------------------------------------------------------

    def _on_hello(self, frame: bp.Frame) -> None:
        if not isinstance(frame, bp.Hello):
            self.fail(ErrorCode.NOT_AUTHENTICATED, "the first frame must be Hello")
            return
        redirect = self.host.standby_redirect
        if redirect is not None:
            # A standby node: the client belongs on the active one (SPEC §6.1).
            self.send(bp.Redirect(redirect, "this brokerd node is a standby"))
            self.close_after_flush()
            return
        if not set(frame.versions) & set(bp.SUPPORTED_VERSIONS):
            self.fail(
                ErrorCode.UNSUPPORTED_VERSION,
                f"server speaks protocol versions {list(bp.SUPPORTED_VERSIONS)}",
            )
            return
        self.vhost = frame.vhost
        self.names = Names.of(frame.vhost)
        if self.local and frame.user is None:
            self._welcome(frame)
        elif self.config.tls_cert_login and frame.user is None and self.host.users.defined:
            self._certificate_login(frame)
        elif frame.user is not None or self.config.token is not None:
            self._check_credentials(frame)
        elif self.host.users.defined:
            self.fail(
                ErrorCode.AUTH_FAILED,
                "this broker has users: connect with a user name and password "
                "(brokerd://user:password@host)",
            )
        elif not self.host.loopback_only:
            # No users and no token: open only on loopback (the start-up check
            # refuses this bind; users deleted since must not open it).
            self.fail(ErrorCode.AUTH_FAILED, "this broker has no users yet and takes no one")
        else:
            self._welcome(frame)

    def _check_credentials(self, frame: bp.Hello) -> None:
        """Check the user's password or the token once this peer's address
        may be checked again.

        After repeated failures from an address its next check waits (a loop
        timer, see ``throttle.py``); a Hello that could not be checked before
        the handshake deadline is refused without being checked at all. The
        control socket's peers are not throttled.
        """
        throttle = self.host.auth_throttle
        wait = 0.0 if self.local else throttle.wait(self.peer_host)
        if wait > 0:
            deadline = self.connected_at + self.config.handshake_timeout
            if time.monotonic() + wait > deadline:
                self.host.handshake_dropped("throttled")
                self.fail(
                    ErrorCode.RESOURCE_LIMIT,
                    "too many failed authentications from this address; try again later",
                )
                return
            if self._held_hello is None:
                throttle.deferred()
            self._held_hello = frame
            self._hello_timer = self._loop.call_later(wait, self._retry_hello)
            return
        if frame.user is not None:
            # The Hello stays held (frames before Welcome are refused) while
            # its password is hashed off the loop.
            self._held_hello = frame
            self._verifying = True
            self.host.verifier.check(
                frame.user, frame.password or "", partial(self._verified, frame)
            )
            return
        self._held_hello = None
        expected = self.config.token or ""
        given = (frame.token or "").encode()
        if not hmac.compare_digest(given, expected.encode()):
            delay = throttle.failed(self.peer_host)
            log.warning(
                "authentication failed from %s (client %r); next attempt from this address "
                "waits %.3g s",
                self.peer_name,
                frame.client_name[:64],
                delay,
            )
            self.fail(ErrorCode.AUTH_FAILED, "invalid token")
            return
        throttle.succeeded(self.peer_host)
        self._welcome(frame)

    def _verified(self, frame: bp.Hello, user: User | None) -> None:
        """The password check's answer (on the loop): Welcome or AUTH_FAILED.
        An unknown user and a wrong password get the same reply."""
        self._verifying = False
        if self._closing:
            return
        self._held_hello = None
        throttle = self.host.auth_throttle
        if user is None:
            delay = 0.0 if self.local else throttle.failed(self.peer_host)
            log.warning(
                "authentication failed from %s for user %r (client %r); next attempt from "
                "this address waits %.3g s",
                self.peer_name,
                (frame.user or "")[:64],
                frame.client_name[:64],
                delay,
            )
            self.fail(ErrorCode.AUTH_FAILED, "invalid user name or password")
            return
        if not self.local:
            throttle.succeeded(self.peer_host)
        self.user = user.name
        self.set_access(self.host.users)
        self._welcome(frame)

    def _certificate_login(self, frame: bp.Hello) -> None:
        """--tls-cert-login: the verified client certificate's CN is the
        user, with no password (RabbitMQ's EXTERNAL mechanism). A CN that
        names no user is a failed login like a wrong password."""
        user = self.host.users.get(self.cert_user) if self.cert_user is not None else None
        if user is None:
            delay = self.host.auth_throttle.failed(self.peer_host)
            log.warning(
                "certificate login failed from %s: CN %r is not a user (client %r); "
                "next attempt from this address waits %.3g s",
                self.peer_name,
                (self.cert_user or "")[:64],
                frame.client_name[:64],
                delay,
            )
            self.fail(
                ErrorCode.AUTH_FAILED,
                "the client certificate's common name (CN) is not a user of this broker",
            )
            return
        self.host.auth_throttle.succeeded(self.peer_host)
        self.user = user.name
        self.set_access(self.host.users)
        self._welcome(frame)

    def set_access(self, users: Users) -> None:
        """(Re)build this session's rights from its user's current tags and
        permissions (at Welcome, and when an administrator changes them)."""
        if self.user is None:
            return
        user = users.get(self.user)
        tags = user.tags if user is not None else frozenset()
        self.access = Access(self.user, self.vhost, tags, users.permission(self.user, self.vhost))
        self.admin = self.access.admin

    def _retry_hello(self) -> None:
        self._hello_timer = None
        frame = self._held_hello
        if frame is None or self._closing:
            return
        try:
            self._check_credentials(frame)
        except Exception as exc:  # a timer, not a read: the same rule applies
            self._failed(frame, exc)

    def handshake_expired(self, timeout: float) -> None:
        """Called by the server when the handshake deadline has passed."""
        if self._verifying:
            self.fail(
                ErrorCode.RESOURCE_LIMIT,
                f"the password could not be checked within the handshake timeout "
                f"({timeout:g} s from connect); the broker is busy checking others",
            )
        elif self._held_hello is not None:
            self.fail(
                ErrorCode.RESOURCE_LIMIT,
                "too many failed authentications from this address; try again later",
            )
        else:
            self.fail(
                ErrorCode.NOT_AUTHENTICATED,
                f"no Hello within the handshake timeout ({timeout:g} s from connect)",
            )

    def _welcome(self, frame: bp.Hello) -> None:
        # After the credentials: who may not log in does not learn which
        # vhosts exist.
        if not self.host.vhosts.exists(self.vhost):
            self.fail(ErrorCode.NOT_FOUND, f"vhost {self.vhost!r} does not exist")
            return
        access = self.access
        if (
            access is not None
            and ADMINISTRATOR not in access.tags
            and self.host.users.permission(access.user, self.vhost) is None
        ):
            self.fail(
                ErrorCode.ACCESS_REFUSED,
                f"access to vhost {self.vhost!r} refused for user {access.user!r}: "
                "it has no permissions there",
            )
            return
        if not self.host.authenticate(self):
            self.fail(ErrorCode.RESOURCE_LIMIT, "too many connections")
            return
        self.authenticated = True
        self.admin = self.access is None or self.access.admin
        self.client_name = frame.client_name
        self.decoder.max_frame = self.config.max_frame
        # SPEC §6.2: heartbeat timers start with Welcome, however long the
        # Hello waited for its turn.
        self.last_recv = time.monotonic()
        # The smaller non-zero interval wins; 0 only when both sides ask for 0.
        wanted = [h for h in (self.config.heartbeat, frame.heartbeat) if h > 0]
        self.heartbeat = max(min(wanted), MIN_HEARTBEAT) if wanted else 0.0
        version = max(set(frame.versions) & set(bp.SUPPORTED_VERSIONS))
        self.send(
            bp.Welcome(version, self.config.server_name, self.heartbeat, self.config.max_frame)
        )

    # --- requests (``CORE_HANDLERS``; failures go to ``_failed``) -------------------

    def _on_publish(self, f: bp.Publish) -> None:
        if not self.authenticated:
            self.fail(ErrorCode.NOT_AUTHENTICATED, "the first frame must be Hello")
            return
        if self.access is not None:
            self.access.check_publish(f.exchange)
        exchange, routing_key = self.names.route_in(f.exchange, f.routing_key)
        self.broker.publish(self.conn, f.seq, exchange, routing_key, f.body, f.props)

    def _on_heartbeat(self, f: bp.Heartbeat) -> None:
        pass

    def _on_close(self, f: bp.Close) -> None:
        self.send(bp.Close(0, "bye"))
        self.close_after_flush()

    def _on_declare_exchange(self, f: bp.DeclareExchange) -> None:
        self.broker.declare_exchange(self.names.inn(f.name), f.type, f.durable)
        self.reply_ok(f.req)

    def _on_delete_exchange(self, f: bp.DeleteExchange) -> None:
        self.broker.delete_exchange(self.names.inn(f.name))
        self.reply_ok(f.req)

    def _on_declare_queue(self, f: bp.DeclareQueue) -> None:
        names = self.names
        options = f.options
        dlq = options.get("dead_letter_queue") if isinstance(options, dict) else None
        if isinstance(dlq, str) and dlq:
            options = {**options, "dead_letter_queue": names.inn(dlq)}
        self.broker.declare_queue(names.inn(f.name), f.durable, options)
        self.reply_ok(f.req)

    def _on_delete_queue(self, f: bp.DeleteQueue) -> None:
        self.reply_ok(f.req, self.broker.delete_queue(self.names.inn(f.name)))

    def _on_purge_queue(self, f: bp.PurgeQueue) -> None:
        self.reply_ok(f.req, self.broker.purge_queue(self.names.inn(f.name)))

    def _on_bind(self, f: bp.Bind) -> None:
        names = self.names
        self.broker.bind(names.inn(f.queue), names.exchange_in(f.exchange), f.routing_key)
        self.reply_ok(f.req)

    def _on_unbind(self, f: bp.Unbind) -> None:
        names = self.names
        self.broker.unbind(names.inn(f.queue), names.exchange_in(f.exchange), f.routing_key)
        self.reply_ok(f.req)

    def _on_queue_stats(self, f: bp.QueueStats) -> None:
        self.reply_ok(f.req, self.broker.queue_stats(self.names.inn(f.name)))

    def _on_consume(self, f: bp.Consume) -> None:
        consumer = self.broker.add_consumer(self.conn, self.names.inn(f.queue), f.prefetch, f.lease)
        # The client learns the consumer's id before its first Deliver.
        self.reply_ok(f.req, consumer.id)
        self.broker.start_consumer(consumer)

    def _on_cancel(self, f: bp.Cancel) -> None:
        self.broker.cancel(self.conn, f.consumer)
        self.reply_ok(f.req)

    def _on_ack(self, f: bp.Ack) -> None:
        self.send(bp.Settled(f.req, self.broker.ack(self.conn, f.deliveries)))

    def _on_nack(self, f: bp.Nack) -> None:
        lost = self.broker.nack(self.conn, f.deliveries, f.requeue, f.delay, counted=f.counted)
        self.send(bp.Settled(f.req, lost))

    def _on_reject(self, f: bp.Reject) -> None:
        self.send(bp.Settled(f.req, self.broker.reject(self.conn, f.deliveries, f.reason)))

    def _on_extend(self, f: bp.Extend) -> None:
        self.send(bp.Settled(f.req, self.broker.extend(self.conn, f.deliveries, f.seconds)))


#: The core's frames after the handshake (Publish is dispatched before the table).
CORE_HANDLERS: Handlers = {
    bp.Heartbeat: Session._on_heartbeat,
    bp.Close: Session._on_close,
    bp.DeclareExchange: Session._on_declare_exchange,
    bp.DeleteExchange: Session._on_delete_exchange,
    bp.DeclareQueue: Session._on_declare_queue,
    bp.DeleteQueue: Session._on_delete_queue,
    bp.PurgeQueue: Session._on_purge_queue,
    bp.Bind: Session._on_bind,
    bp.Unbind: Session._on_unbind,
    bp.QueueStats: Session._on_queue_stats,
    bp.Consume: Session._on_consume,
    bp.Cancel: Session._on_cancel,
    bp.Ack: Session._on_ack,
    bp.Nack: Session._on_nack,
    bp.Reject: Session._on_reject,
    bp.Extend: Session._on_extend,
}
