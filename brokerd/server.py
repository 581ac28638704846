"""The listener: opens storage, recovers state, accepts connections, keeps
time for the core and stops gracefully.

Time-driven work (lease expiry, delayed messages, heartbeats, handshake
deadlines) runs from one periodic timer for the whole broker, never from a
task per message or per connection.

Connections are admitted in two pools. Until its Welcome a connection is
*handshaking*: at most ``max_handshakes`` of those exist, each must be
welcomed within ``handshake_timeout`` of its connect, and when the pool is
full a new connection pushes out the oldest one. Only a connection that
authenticated counts against ``max_connections``, so peers that never finish
a handshake can never take a slot an authenticated client needs.

Connections also arrive on the control socket in the data dir
(``control.py``): the same protocol, each such connection an admin one
without a token. It is bound before the port file is written, so whoever
waits for the port file finds it, and removed at a clean stop.

The server is the core broker protocol only. Extensions (the task layer) add
request handlers, tick hooks and start-up hooks before ``start``; the
``brokerd`` command builds the full broker (``brokerd.cli.build_server``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import brokerd_protocol as bp
from brokerd_protocol import ErrorCode

from .auth import Users, Verifier, passwords
from .auth.users import load as load_users
from .broker import Broker
from .clock import Clock, SystemClock
from .config import Config, ConfigError, is_loopback
from .control import bind_control_socket, control_path, remove_control_socket
from .diskfree import DiskMonitor
from .flow import FlowControl
from .foreign import Foreign, Refusal, WarningGate, addresses, refusal_for, warning_text
from .metrics import MetricsEndpoint, start_metrics
from .outbox import Outbox
from .session import CORE_HANDLERS, Handler, Handlers, Session
from .storage import MemoryStore, SqliteStore, Store
from .storage.errors import open_error
from .storage.postgres import PostgresStore
from .throttle import AuthThrottle
from .tls import ServerTLS, TLSFiles, describe
from .tlsaccept import TLSAccept
from .vhosts import Registry

if TYPE_CHECKING:
    from .admin.vhosts import VhostAdmin
    from .auth.admin import UserAdmin

log = logging.getLogger("brokerd.server")

#: Seconds between timer ticks (lease expiry, delayed release, heartbeats).
TICK = 0.02
#: Why connections ended during their handshake (metric labels).
HANDSHAKE_DROPS = ("timeout", "evicted", "throttled")
#: Foreign protocols recognised on the port (metric labels; ``foreign.sniff``).
WRONG_PROTOCOLS = ("amqp", "http", "tls")


class Handshaking(Protocol):
    """A member of the handshake pool: a ``Session`` before its Welcome, or a
    ``TLSAccept`` before its TLS handshake finished."""

    connected_at: float

    def fail(self, code: ErrorCode, message: str) -> None: ...

    def handshake_expired(self, timeout: float) -> None: ...


class BrokerServer:
    def __init__(
        self,
        config: Config,
        clock: Clock | None = None,
        *,
        auth_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        #: TLS on the broker port (None: plain TCP). Built first: bad files
        #: stop the start before anything is opened (``TLSFileError``).
        self.tls: ServerTLS | None = None
        if config.tls_cert is not None and config.tls_key is not None:
            self.tls = ServerTLS(TLSFiles(config.tls_cert, config.tls_key, config.tls_ca))
        self.store: Store
        if config.in_memory:
            self.store = MemoryStore(schedule=self._call_soon)
        elif config.store is not None:
            self.store = PostgresStore(
                config.store,
                durability=config.durability,
                lock_dir=Path(config.data_dir),
                address=config.advertise,
                standby=True,
            )
        else:
            self.store = SqliteStore(
                Path(config.data_dir) / "brokerd.sqlite3", durability=config.durability
            )
        self.broker = Broker(
            self.store,
            self.clock,
            on_dirty=self._schedule_flush,
            memory_limit=config.memory_limit,
            max_unacked_bytes=config.max_unacked_bytes,
            max_unacked_bytes_total=config.max_unacked_bytes_total,
        )
        self.flow = FlowControl(self.broker, config.max_uncommitted)
        self.disk: DiskMonitor | None = None
        if isinstance(self.store, SqliteStore):
            # Read even with the alarm off (a limit of 0): the reading also
            # says when a message may go out before its write.
            store = self.store
            disk = self.disk = DiskMonitor(
                config.data_dir,
                config.min_free_disk,
                self.flow.set_disk_alarm,
                written=lambda: store.committed_bytes,
            )
            broker = self.broker
            self.broker.deliver_before_write = lambda: disk.ample(broker.uncommitted_bytes)
        elif isinstance(self.store, MemoryStore):
            self.broker.deliver_before_write = _always
        #: Every open connection.
        self.sessions: set[Session] = set()
        #: Connections with frames queued this tick (written at its end, or
        #: when the broker asks: early deliveries before their write).
        self.outbox = Outbox(self._call_soon)
        self.broker.write_out = self.outbox.drain
        #: Connections not welcomed yet (TLS handshakes included), in the
        #: order they entered the pool.
        self.handshaking: dict[Handshaking, None] = {}
        #: Connections welcomed and still open (limited by max_connections).
        self.authenticated = 0
        #: Connections dropped during their handshake, by reason.
        self.handshakes_dropped = dict.fromkeys(HANDSHAKE_DROPS, 0)
        #: Failed-authentication throttle per peer address (its own clock so
        #: tests can run it on a fake one).
        self.auth_throttle = AuthThrottle(auth_clock)
        #: Users, tags and permissions (loaded from the store at start).
        self.users = Users()
        #: Checks and makes password hashes off the loop.
        self.verifier = Verifier(self.users)
        #: The vhosts that exist (loaded from the store at start).
        self.vhosts = Registry()
        #: The broker port is on loopback only: without users or token it
        #: takes anyone (as before users existed); elsewhere it must not.
        self.loopback_only = is_loopback(config.host)
        #: Connections that spoke another protocol, by protocol.
        self.wrong_protocols = dict.fromkeys(WRONG_PROTOCOLS, 0)
        #: One warning per peer address a minute about those.
        self.wrong_protocol_warnings = WarningGate(auth_clock)
        self.port: int | None = None
        #: The control socket (None for an in-memory broker).
        self.control_path: Path | None = control_path(config.data_dir)
        self._control: asyncio.AbstractServer | None = None
        self._session_ids = itertools.count(1)
        self.metrics: MetricsEndpoint | None = None
        #: Traffic of connections already closed (metrics add the open ones).
        self.closed_bytes_in = 0
        self.closed_bytes_out = 0
        self.started_at = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_heartbeat_check = 0.0
        self._stopped = asyncio.Event()
        #: Stopped because another node took the database over (exit status 3).
        self.fenced = False
        #: While this node stands by (another holds the database's lease):
        #: the active node's address every Hello is redirected to ("" when
        #: unknown); None once this node is active (docs/ha.md).
        self.standby_redirect: str | None = None
        self._stepping_down: asyncio.Future[None] | None = None
        #: Every request frame's handler, shared by all sessions (``Host.handlers``).
        self.handlers: dict[type[bp.Frame], Handler] = dict(CORE_HANDLERS)
        #: Called with the wall-clock time on every timer tick.
        self.tick_hooks: list[Callable[[float], None]] = []
        #: Called with a deleted vhost's prefix (the task layer's memory).
        self.vhost_deleted_hooks: list[Callable[[str], None]] = []
        #: Awaited by start() once the store is open, before connections are accepted.
        self.startup_hooks: list[Callable[[], Awaitable[None]]] = []
        #: Awaited by start() once the broker listens (state restored), e.g. the
        #: management HTTP server; an error stops the start.
        self.listening_hooks: list[Callable[[], Awaitable[None]]] = []
        #: Called by stop() first (extensions close their own listeners).
        self.stop_hooks: list[Callable[[], None]] = []
        #: The management plane (``brokerd.management``), once installed.
        self.management: Any = None
        #: The user and vhost admin (``auth.admin``, ``admin.vhosts``), once
        #: installed: the management API's user/permission/vhost changes use them.
        self.user_admin: UserAdmin | None = None
        self.vhost_admin: VhostAdmin | None = None
        if self.disk is not None:
            self.tick_hooks.append(self.disk.tick)

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        store = self.store
        standby = isinstance(store, PostgresStore) and not store.active
        if standby and not await self._stand_by(cast(PostgresStore, store)):
            return
        started = time.monotonic()
        recovered = await loop.run_in_executor(None, self.store.recover, self.clock.now())
        if isinstance(self.store, PostgresStore):
            self.store.on_fenced = self._fenced
            self.store.on_unavailable = self.flow.set_store_alarm
        if isinstance(self.store, SqliteStore | PostgresStore):
            self.store.start(loop.call_soon_threadsafe)
        for hook in self.startup_hooks:
            try:
                await hook()
            except Exception as exc:
                # A start-up read of a damaged file fails in the writer thread.
                cause = exc.__cause__
                if isinstance(self.store, SqliteStore) and isinstance(cause, sqlite3.Error):
                    raise open_error(self.store.path, cause) from exc
                raise
        await load_users(self.users, self.store)
        await self.vhosts.load(self.store)
        if not self.loopback_only and self.config.token is None and not self.users.defined:
            await loop.run_in_executor(None, self.store.close)
            raise ConfigError(
                f"refusing to listen on {self.config.host!r} without credentials: add a user "
                "first (bind 127.0.0.1, then brokerctl add_user NAME and set_permissions), "
                "or set --token-file"
            )
        # Made now, off the loop: unknown users are checked against it, and the
        # first one must not pay for making it (nor stall the loop).
        await loop.run_in_executor(None, passwords.dummy_hash)
        self.broker.restore(recovered)
        self.standby_redirect = None
        if self.disk is not None:
            self.disk.check(self.clock.now())
        log.info(
            "recovered %d queue(s), %d exchange(s) in %.3f s",
            len(recovered.queues),
            len(recovered.exchanges),
            time.monotonic() - started,
        )
        # With TLS a connection enters the handshake pool (and its deadline
        # starts) at accept, before the TLS handshake (``tlsaccept.py``), so a
        # peer that never finishes TLS is counted and dropped like one that
        # never sends a Hello.
        if self._server is None:
            await self._listen()
        if isinstance(store, PostgresStore):
            store.advertise(self._advertised())
        if self.control_path is not None:
            self._control = await loop.create_unix_server(
                self._new_local_session, sock=bind_control_socket(self.control_path)
            )
            log.info("control socket (brokerctl): %s", self.control_path)
        assert self.port is not None
        # The metrics endpoint listens before the port file appears: whoever
        # waits for that file may ask this node for its metrics port at once.
        if self.config.metrics_port and self.metrics is None:
            self.metrics = await start_metrics(self)
        # Extensions' listeners (the management API, which writes its own
        # port file) too, so the port file means everything listens.
        for listening in self.listening_hooks:
            await listening()
        if self.config.port_file:
            _write_port_file(self.config.port_file, self.port)
        self._timer = loop.call_later(TICK, self._tick)
        log.info(
            "brokerd listening on %s:%d, %s (data: %s)",
            self.config.host,
            self.port,
            describe(self.tls.files) if self.tls is not None else "plain TCP",
            self.config.store_shown,
        )

    async def _listen(self) -> None:
        tls = self.tls
        assert self._loop is not None
        # TLS is started per connection (``tlsaccept.py``), not by the
        # listener, so that unfinished TLS handshakes are in the pool.
        self._server = await self._loop.create_server(
            self._new_session if tls is None else self._new_tls_accept,
            self.config.host,
            self.config.port,
            reuse_address=True,
            backlog=1024,
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]

    def _advertised(self) -> str:
        """Where clients reach this node: ``--advertise``, else the listen address."""
        if self.config.advertise is not None:
            return self.config.advertise
        host = self.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    async def _stand_by(self, store: PostgresStore) -> bool:
        """Another node holds the database's lease: listen, redirect every
        Hello to it, and wait for its lease to run out; then take it (a new
        epoch) and go on starting as the active node. False if stopped first."""
        assert self._loop is not None
        self.standby_redirect = store.holder_address or ""
        await self._listen()
        store.address = self._advertised()
        if self.config.metrics_port:
            self.metrics = await start_metrics(self)
        if self.config.port_file:
            _write_port_file(self.config.port_file, self.port or 0)
        self._timer = self._loop.call_later(TICK, self._standby_tick)
        log.info(
            "standby on %s:%d: another node holds the database's lease; redirecting clients to %s",
            self.config.host,
            self.port,
            self.standby_redirect or "(unknown)",
        )
        active = await self._loop.run_in_executor(None, store.take_over)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not active or self._stopped.is_set():
            return False
        # Hellos are still redirected (to no address: "try again") until
        # the queues are loaded.
        self.standby_redirect = ""
        log.warning(
            "took the database's lease (epoch %d): this node is active now; loading the queues",
            store.epoch,
        )
        return True

    def _standby_tick(self) -> None:
        """A standby's timer: follow the holder's address, drop slow handshakes."""
        assert self._loop is not None
        store = self.store
        if isinstance(store, PostgresStore) and self.standby_redirect is not None:
            address = store.holder_address or ""
            if address != self.standby_redirect:
                log.info("standby: the active node is at %s", address or "(unknown)")
                self.standby_redirect = address
        self._check_handshakes(time.monotonic())
        self._timer = self._loop.call_later(0.25, self._standby_tick)

    def _fenced(self, error: Exception) -> None:
        """Another node took the database over: this one writes nothing more
        (the store refuses), so it steps down: stops, closing its clients."""
        log.critical("stepping down: %s", error)
        self.fenced = True
        self._stepping_down = asyncio.ensure_future(self.stop())

    def reload_tls(self) -> bool:
        """Re-read the TLS certificate, key and CA for new connections (SIGHUP).

        Open connections keep theirs; a failed reload keeps the old files.
        """
        if self.tls is None:
            log.info("reload requested; TLS is not configured, nothing to reload")
            return False
        return self.tls.reload()

    async def serve_until_stopped(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop accepting, close connections, let in-flight commits finish."""
        if self._stopped.is_set():
            return
        log.info("shutting down")
        if self._server is not None:
            self._server.close()
        if self._control is not None:
            self._control.close()
        if self.metrics is not None:
            self.metrics.close()
        for hook in self.stop_hooks:
            hook()
        self.broker.stopping = True
        if isinstance(self.store, PostgresStore) and not self.store.active:
            self.store.stop_waiting()
        for session in list(self.sessions):
            session.fail(ErrorCode.SHUTTING_DOWN, "broker is shutting down")
        for member in list(self.handshaking):  # TLS handshakes not finished
            member.fail(ErrorCode.SHUTTING_DOWN, "broker is shutting down")
        if self._timer is not None:
            self._timer.cancel()
        self.broker.flush()
        # Let session close callbacks run, then the writer thread drains its
        # queue (every batch accepted so far) before the database closes.
        await asyncio.sleep(0)
        self.broker.flush()
        assert self._loop is not None
        await self._loop.run_in_executor(None, self.store.close)
        self.verifier.close()
        if self._server is not None:
            await self._server.wait_closed()
        if self._control is not None and self.control_path is not None:
            remove_control_socket(self.control_path)
        self._stopped.set()
        log.info("stopped")

    # --- sessions -------------------------------------------------------------

    def add_extension(self, handlers: Handlers) -> None:
        """Register an extension's request handlers (the task layer's frames).

        They run behind the same error rule as the core's (``Session._failed``)
        and may not take over a frame the core or another extension handles.
        """
        taken = self.handlers.keys() & handlers.keys()
        if taken:
            names = ", ".join(sorted(t.__name__ for t in taken))
            raise ValueError(f"frames already handled: {names}")
        self.handlers.update(handlers)

    def _new_session(self) -> Session:
        return Session(self)

    def _new_local_session(self) -> Session:
        return Session(self, local=True)

    def _new_tls_accept(self) -> TLSAccept:
        assert self.tls is not None
        return TLSAccept(self, self.tls.context, self.config.handshake_timeout, self._new_session)

    def admit(self, session: Session) -> None:
        """Take a new connection into the handshake pool (over TLS: once
        its TLS handshake has finished; see ``enter_pool``)."""
        self.sessions.add(session)
        session.id = next(self._session_ids)
        self.enter_pool(session)

    def enter_pool(self, member: Handshaking) -> None:
        """Count a connection against ``max_handshakes``.

        A full pool drops its oldest member rather than refusing the newcomer:
        a trickling attacker's connections are always the oldest, while an
        honest client finishes its handshake in one round trip, so an attacker
        would have to open ``max_handshakes`` connections within that round
        trip to push it out. Refusing instead would let a pool kept full by
        reconnecting attackers lock every new client out.
        """
        handshaking = self.handshaking
        if len(handshaking) >= self.config.max_handshakes:
            oldest = next(iter(handshaking))
            del handshaking[oldest]
            self.handshakes_dropped["evicted"] += 1
            oldest.fail(
                ErrorCode.RESOURCE_LIMIT,
                "too many connections in the handshake; the oldest was dropped",
            )
        handshaking[member] = None

    def leave_pool(self, member: Handshaking) -> None:
        """A TLS handshake ended (the session it made enters on its own)."""
        self.handshaking.pop(member, None)

    def authenticate(self, session: Session) -> bool:
        """Move a connection that passed the handshake to the authenticated
        pool; False when ``max_connections`` are already open."""
        self.handshaking.pop(session, None)
        if self.authenticated >= self.config.max_connections:
            return False
        self.authenticated += 1
        return True

    def handshake_dropped(self, reason: str) -> None:
        self.handshakes_dropped[reason] += 1

    def wrong_protocol(self, session: Session, foreign: Foreign) -> Refusal:
        self.wrong_protocols[foreign.protocol] += 1
        metrics_port = self.metrics.port if self.metrics is not None else None
        management_port = self.management.port if self.management is not None else None
        where = addresses(
            session.local_host,
            session.local_port,
            self.config.metrics_host,
            metrics_port,
            (self.config.http_host, management_port) if management_port else None,
        )
        suppressed = self.wrong_protocol_warnings.admit(session.peer_host)
        if suppressed is not None:
            line = warning_text(foreign, session.peer_name, where)
            if suppressed:
                line += f" ({suppressed} more from this address since the last such warning)"
            log.warning("%s", line)
        return refusal_for(foreign, where)

    def forget(self, session: Session) -> None:
        if session in self.sessions:
            self.closed_bytes_in += session.bytes_in
            self.closed_bytes_out += session.bytes_out
            if session.authenticated:
                self.authenticated -= 1
        self.sessions.discard(session)
        self.handshaking.pop(session, None)
        self.flow.forget(session)

    # --- the loop's housekeeping ---------------------------------------------

    def _call_soon(self, fn: Callable[[], None]) -> None:
        assert self._loop is not None
        self._loop.call_soon(fn)

    def _schedule_flush(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        loop.call_soon(self.broker.flush)

    def _tick(self) -> None:
        assert self._loop is not None
        try:
            self.broker.tick()
            if self.tick_hooks:
                wall = self.clock.now()
                for hook in self.tick_hooks:
                    hook(wall)
            now = time.monotonic()
            if now - self._last_heartbeat_check >= 0.5:
                self._last_heartbeat_check = now
                self._check_handshakes(now)
                self._check_heartbeats(now)
        except Exception:  # the timer must survive a bug in one callback
            log.exception("timer tick failed")
        self._timer = self._loop.call_later(TICK, self._tick)

    def _check_handshakes(self, now: float) -> None:
        """Drop connections not welcomed within the timeout of their connect.

        Every member is visited (at most ``max_handshakes``, twice a
        second): the pool is in entry order, and a session made after TLS
        enters it later than connections accepted after its own accept,
        whose time it keeps. Bytes trickling in never extend the deadline.
        """
        timeout = self.config.handshake_timeout
        expired = [m for m in self.handshaking if now - m.connected_at > timeout]
        for member in expired:
            del self.handshaking[member]
            self.handshakes_dropped["timeout"] += 1
            member.handshake_expired(timeout)

    def _check_heartbeats(self, now: float) -> None:
        for session in list(self.sessions):
            if not session.authenticated:
                continue
            hb = session.heartbeat
            if not hb:
                continue
            # A connection we hold cannot be heard, but must still hear from us.
            if now - session.last_recv > 2 * hb and not session.commit_paused:
                session.fail(ErrorCode.HEARTBEAT_TIMEOUT, f"no frames for {2 * hb:g} s")
            elif now - session.last_send >= hb:
                session.send(bp.Heartbeat())


def _write_port_file(path: str, port: int) -> None:
    """Write atomically so a reader never sees a half-written number."""
    tmp = Path(path + ".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, path)


def _always() -> bool:
    return True
