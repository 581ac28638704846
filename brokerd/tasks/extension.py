"""The task layer's server side as one extension of the broker's server.

It adds the frames 40-51, 54, 56 and 57 to every session, a tick hook (schedules, ResultWait
timeouts, expiry), the broker's delivery filter (revocations) and a start-up
hook that loads revocations and schedules before the first connection is
accepted. All of it runs on the event loop like the core: handlers are plain
functions, replies that depend on durability go out from commit callbacks.

A handler that raises is answered by the session's error rule, as a core
handler is (docs/ARCHITECTURE.md, Errors). The server is known only as a
``Host``; the ``brokerd`` command installs the layer (``brokerd.cli``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Container, Mapping
from typing import Any, Protocol

import brokerd_protocol as bp
from brokerd_protocol import DEFAULT_MAX_FRAME

from ..broker import Broker
from ..config import Config
from ..storage.base import Query, Row, Store
from . import groups, namespaced, ratelimits, results, revocations, schedules
from .common import Alive, Client
from .topics import Topics

log = logging.getLogger("brokerd.tasks")

#: Seconds between sweeps for expired results and revocations and for the
#: waiters and subscribers of closed connections.
SWEEP_INTERVAL = 5.0

#: A task-layer request handler: called with the connection and the frame.
Handler = Callable[[Client, Any], None]


class Host(Protocol):
    """What the task layer needs of the server it extends (``BrokerServer``)."""

    @property
    def broker(self) -> Broker: ...

    @property
    def store(self) -> Store: ...

    @property
    def config(self) -> Config: ...

    @property
    def sessions(self) -> Container[object]:
        """The open connections (a client not in it has closed)."""
        ...

    @property
    def tick_hooks(self) -> list[Callable[[float], None]]: ...

    @property
    def startup_hooks(self) -> list[Callable[[], Awaitable[None]]]: ...

    @property
    def vhost_deleted_hooks(self) -> list[Callable[[str], None]]:
        """Called with a deleted vhost's prefix."""
        ...

    def add_extension(self, handlers: Mapping[type[bp.Frame], Handler]) -> None: ...


class TaskExtension:
    def __init__(self, broker: Broker, *, alive: Alive, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.broker = broker
        self.results = results.Results(broker, alive, max_frame)
        self.topics = Topics(alive)
        self.revocations = revocations.Revocations(
            broker, self.results, self.topics, alive, max_frame
        )
        self.rate_limits = ratelimits.RateLimits(broker, self.topics)
        self.schedules = schedules.Schedules(broker, alive)
        self.groups = groups.Groups(broker, alive)
        self._last_sweep = -math.inf
        broker.delivery_filter = self.revocations.filter

    # --- start-up ---------------------------------------------------------------

    def load(self, done: Callable[[BaseException | None], None]) -> None:
        """Read revocations, schedules and the earliest result expiry from the
        store; ``done(error_or_None)`` once all three are in."""
        parts: list[tuple[Query, Callable[[list[Row]], None]]] = [
            (results.Results.LOAD, self.results.loaded),
            (revocations.Revocations.LOAD, self.revocations.loaded),
            (schedules.Schedules.LOAD, self.schedules.loaded),
            # Members after their groups: reads run in submission order.
            (groups.Groups.LOAD, self.groups.loaded),
            (groups.Groups.LOAD_MEMBERS, self.groups.members_loaded),
        ]
        pending = len(parts)
        errors: list[BaseException] = []

        def loaded(apply: Callable[[list[Row]], None], rows: list[Row] | BaseException) -> None:
            nonlocal pending
            if isinstance(rows, BaseException):
                errors.append(rows)
            else:
                apply(rows)
            pending -= 1
            if pending == 0:
                done(errors[0] if errors else None)

        for query, apply in parts:
            self.broker.store.read(query, (), functools.partial(loaded, apply))

    async def start(self) -> None:
        """``load`` as a start-up hook of the server."""
        future: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.load(future.set_result)
        error = await future
        if error is not None:
            raise RuntimeError(f"loading the task layer's state failed: {error}") from error

    # --- frames -------------------------------------------------------------------

    def handlers(self) -> dict[type[bp.Frame], Handler]:
        """The task-layer frame handlers, shared by every connection, each
        behind its vhost mapping (``namespaced.py``)."""
        return {t: namespaced.wrap(t, h) for t, h in self._handlers().items()}

    def _handlers(self) -> dict[type[bp.Frame], Handler]:
        return {
            bp.ResultSet: self.results.set,
            bp.ResultGet: self.results.get,
            bp.ResultWait: self.results.wait,
            bp.ResultWatch: self.results.watch,
            bp.Revoke: self.revocations.revoke,
            bp.Subscribe: self.topics.subscribe,
            bp.ScheduleSet: self.schedules.set,
            bp.ScheduleDelete: self.schedules.delete,
            bp.ScheduleList: self.schedules.list,
            bp.ResultDelete: self.results.delete,
            bp.GroupJoin: self.groups.join,
            bp.GroupFire: self.groups.fire,
            bp.RateAcquire: self.rate_limits.acquire,
            bp.RateSet: self.rate_limits.set,
        }

    def forget_vhost(self, prefix: str) -> None:
        """Drop what is held in memory under a deleted vhost's ``prefix``;
        the store's rows go with ``Batch.delete_vhost``."""
        for name in [n for n in self.schedules.entries if n.startswith(prefix)]:
            del self.schedules.entries[name]
        for task_id in [t for t in self.revocations.revoked if t.startswith(prefix)]:
            del self.revocations.revoked[task_id]
        for group_id in [g for g in self.groups.groups if g.startswith(prefix)]:
            self.groups.drop(group_id)
        for table in (self.rate_limits.limits, self.rate_limits.next_free):
            for name in [n for n in table if n.startswith(prefix)]:
                del table[name]
        self.results.forget_prefix(prefix)

    # --- time -----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """The server's tick hook (wall-clock seconds)."""
        self.schedules.tick(now)
        self.results.tick(now)
        if now - self._last_sweep >= SWEEP_INTERVAL:
            self._last_sweep = now
            self.results.sweep(now)
            self.revocations.sweep(now)
            self.groups.sweep(now)
            self.topics.sweep()
            self.rate_limits.sweep()

    def stats(self) -> dict[str, int]:
        return {
            "results_cached": self.results.cached,
            "results_waiting": self.results.waiting,
            "revoked": len(self.revocations.revoked),
            "schedules": len(self.schedules.entries),
            "schedule_runs": self.schedules.fired,
            "schedule_failures": self.schedules.failed,
            "groups": len(self.groups.groups),
            "groups_fired": self.groups.fired,
            "rate_limits": len(self.rate_limits.limits),
            "rate_slots_granted": self.rate_limits.granted,
        }


def install(server: Host) -> TaskExtension:
    """Wire the extension into ``server``; called by ``brokerd.cli.build_server``
    before the server starts. Its tables are the store's: every store creates
    them when it opens."""
    ext = TaskExtension(
        server.broker,
        alive=lambda client: client in server.sessions,
        max_frame=server.config.max_frame,
    )
    server.add_extension(ext.handlers())
    server.vhost_deleted_hooks.append(ext.forget_vhost)
    server.tick_hooks.append(ext.tick)
    server.startup_hooks.append(ext.start)
    return ext
