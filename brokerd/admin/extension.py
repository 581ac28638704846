"""The admin frames (60-67, SPEC §17) as one extension of the broker's server:
status, stop, the five lists and closing a connection, for brokerctl.

Who may use them: a connection with ``Session.admin`` set, that is one from
the control socket (the broker's OS user, no token) or a TCP one that passed
the handshake, with the broker's token when it has one. Anyone else gets
``ACCESS_REFUSED`` for the request and keeps the connection. (Users and
their tags come later; then only administrators will pass.)

Handlers are plain functions on the event loop, like the core's; what they
read is the loop's own state, so a listing is a consistent snapshot. Replies
are bounded as every frame is (SPEC §2.1): lists page (``listing.page``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import brokerd_protocol as bp
from brokerd_protocol import ErrorCode

from ..auth.users import ADMINISTRATOR
from ..broker import Broker
from ..config import Config
from ..diskfree import DiskMonitor
from ..errors import BrokerError, not_found
from ..metrics import rss_bytes
from ..queues import Connection, QueueState
from ..vhosts import DEFAULT_VHOST, Registry, split
from . import listing

log = logging.getLogger("brokerd.admin")


class AdminSession(listing.Listed, Protocol):
    """What the admin layer needs of a connection (``Session``)."""

    admin: bool
    conn: Connection
    peer_name: str

    def reply_ok(self, req: int, value: Any = None) -> None: ...

    def close_by_admin(self, reason: str) -> None: ...


class Host(Protocol):
    """What the admin layer needs of the server (``BrokerServer``)."""

    @property
    def broker(self) -> Broker: ...

    @property
    def config(self) -> Config: ...

    @property
    def sessions(self) -> Collection[Any]: ...

    @property
    def started_at(self) -> float: ...

    @property
    def port(self) -> int | None: ...

    @property
    def control_path(self) -> Path | None: ...

    @property
    def disk(self) -> DiskMonitor | None: ...

    @property
    def vhosts(self) -> Registry: ...

    async def stop(self) -> None: ...

    def add_extension(self, handlers: Mapping[type[bp.Frame], Any]) -> None: ...


Handler = Callable[[AdminSession, Any], None]


def _version() -> str:
    try:
        return metadata.version("brokerd")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare tree
        return "unknown"


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class AdminExtension:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.version = _version()
        self._stopping: asyncio.Task[None] | None = None

    def handlers(self) -> dict[type[bp.Frame], Handler]:
        return {
            bp.AdminStatus: self.status,
            bp.AdminStop: self.stop,
            bp.ListQueues: self.list_queues,
            bp.ListExchanges: self.list_exchanges,
            bp.ListBindings: self.list_bindings,
            bp.ListConnections: self.list_connections,
            bp.ListConsumers: self.list_consumers,
            bp.CloseConnection: self.close_connection,
        }

    # --- who may ask ------------------------------------------------------------------

    @staticmethod
    def _check(session: AdminSession, frame: bp.Frame) -> None:
        if not session.admin:
            raise BrokerError(
                ErrorCode.ACCESS_REFUSED,
                f"{type(frame).__name__} needs an admin connection (the control socket, or "
                "the broker's token)",
            )

    def _budget(self) -> int:
        return self.host.config.max_frame // 2

    # --- frames -------------------------------------------------------------------------

    def status(self, session: AdminSession, f: bp.AdminStatus) -> None:
        self._check(session, f)
        session.reply_ok(f.req, self.status_map(self._vhost(session, None)))

    def status_map(self, vhost: str | None = None) -> dict[str, Any]:
        """The status; ``counts`` of ``vhost`` only when given (a monitoring
        user's: it sees nothing of other vhosts)."""
        host = self.host
        broker = host.broker
        config = host.config
        queues = [q for n, q in broker.queues.items() if vhost is None or split(n)[0] == vhost]
        exchanges = [
            ex for n, ex in broker.exchanges.items() if vhost is None or split(n)[0] == vhost
        ]
        listeners = [{"protocol": "brokerd", "address": f"{config.host}:{host.port}"}]
        if host.control_path is not None:
            listeners.append({"protocol": "control", "address": str(host.control_path)})
        sessions = [
            s
            for s in host.sessions
            if getattr(s, "authenticated", False)
            and (vhost is None or getattr(s, "vhost", DEFAULT_VHOST) == vhost)
        ]
        storage: dict[str, Any] = {"path": None, "bytes": 0}
        if config.store is not None:
            # PostgreSQL: where, not how big (the database's size is its server's).
            storage = {"path": config.store_shown, "bytes": 0}
        elif not config.in_memory:
            db = Path(config.data_dir).absolute() / "brokerd.sqlite3"
            size = sum(_file_size(db.with_name(db.name + tail)) for tail in ("", "-wal"))
            storage = {"path": str(db), "bytes": size}
        disk = host.disk
        return {
            "version": self.version,
            "server_name": config.server_name,
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - host.started_at, 3),
            "data_dir": ":memory:" if config.in_memory else str(Path(config.data_dir).absolute()),
            "listeners": listeners,
            "counts": {
                "queues": len(queues),
                "exchanges": len(exchanges),
                "bindings": sum(len(ex.router) for ex in exchanges),
                "connections": len(sessions),
                **_queue_totals(queues),
            },
            "memory": {
                "rss_bytes": rss_bytes(),
                "message_bytes": broker.memory.used,
                "message_limit": broker.memory.limit,
            },
            "storage": storage,
            "alarms": {
                "disk": bool(disk is not None and disk.alarm),
                "memory": broker.memory.full(),
            },
        }

    def stop(self, session: AdminSession, f: bp.AdminStop) -> None:
        """Ok first, then the graceful stop SIGTERM runs: every connection,
        this one included, is closed with ``SHUTTING_DOWN`` after it."""
        self._check(session, f)
        session.reply_ok(f.req, {"pid": os.getpid()})
        if self._stopping is not None:  # asked twice: one stop is under way
            return
        log.warning("stop requested by an administrator on %s", session.peer_name)
        # A task of its own (kept here), started after this read's replies
        # are written: the stop closes this very connection.
        self._stopping = asyncio.get_running_loop().create_task(self.host.stop())

    @staticmethod
    def _vhost(session: AdminSession, asked: str | None) -> str | None:
        """The vhost a listing shows: the one asked for, or every vhost for
        an administrator (or the control socket, or the token); anyone else
        sees only the vhost it is connected to."""
        access = getattr(session, "access", None)
        if access is None or ADMINISTRATOR in access.tags:
            return asked
        own: str = getattr(session, "vhost", DEFAULT_VHOST)
        if asked is not None and asked != own:
            raise BrokerError(
                ErrorCode.ACCESS_REFUSED,
                f"listing vhost {asked!r} refused: this connection is on vhost {own!r}",
            )
        return own

    def list_queues(self, session: AdminSession, f: bp.ListQueues) -> None:
        self._check(session, f)
        vhost = self._vhost(session, f.vhost)
        rows = listing.queue_rows(self.host.broker.queues, self.host.broker.clock.now(), vhost)
        session.reply_ok(
            f.req, listing.page(rows, f.cursor, f.limit, self._budget(), listing.QUEUE_KEY)
        )

    def list_exchanges(self, session: AdminSession, f: bp.ListExchanges) -> None:
        self._check(session, f)
        vhost = self._vhost(session, f.vhost)
        rows = listing.exchange_rows(self.host.broker.exchanges, vhost, self.host.vhosts.all())
        session.reply_ok(
            f.req, listing.page(rows, f.cursor, f.limit, self._budget(), listing.EXCHANGE_KEY)
        )

    def list_bindings(self, session: AdminSession, f: bp.ListBindings) -> None:
        self._check(session, f)
        rows = listing.binding_rows(self.host.broker.exchanges, self._vhost(session, f.vhost))
        session.reply_ok(
            f.req, listing.page(rows, f.cursor, f.limit, self._budget(), listing.BINDING_KEY)
        )

    def list_connections(self, session: AdminSession, f: bp.ListConnections) -> None:
        self._check(session, f)
        rows = listing.connection_rows(self.host.sessions, _conn, self._vhost(session, f.vhost))
        session.reply_ok(
            f.req, listing.page(rows, f.cursor, f.limit, self._budget(), listing.CONNECTION_KEY)
        )

    def list_consumers(self, session: AdminSession, f: bp.ListConsumers) -> None:
        self._check(session, f)
        rows = listing.consumer_rows(self.host.sessions, _conn, self._vhost(session, f.vhost))
        session.reply_ok(
            f.req, listing.page(rows, f.cursor, f.limit, self._budget(), listing.CONSUMER_KEY)
        )

    def close_connection(self, session: AdminSession, f: bp.CloseConnection) -> None:
        self._check(session, f)
        for s in self.host.sessions:
            if getattr(s, "id", None) == f.connection and getattr(s, "authenticated", False):
                target: AdminSession = s
                break
        else:
            raise not_found(f"no connection {f.connection}")
        reason = f.reason or "closed by an administrator"
        # The reply goes first: closing our own connection still answers.
        session.reply_ok(f.req)
        target.close_by_admin(reason)


def _conn(session: Any) -> Connection:
    conn: Connection = session.conn
    return conn


def install(server: Host) -> AdminExtension:
    """Wire the admin frames into ``server`` (``brokerd.cli.build_server``)."""
    ext = AdminExtension(server)
    server.add_extension(ext.handlers())
    return ext


def _queue_totals(queues: list[QueueState]) -> dict[str, int]:
    """Consumers, ready, leased and delayed messages over ``queues``, in one
    pass (the management overview asks for them every poll)."""
    consumers = ready = leased = delayed = 0
    for q in queues:
        consumers += len(q.consumers)
        ready += q.ready_count
        leased += q.leased
        delayed += q.delayed
    return {"consumers": consumers, "ready": ready, "leased": leased, "delayed": delayed}
