"""The admin frames that manage vhosts (75-77, SPEC §17.7), one extension of
the broker's server, for brokerctl's add_vhost, delete_vhost and list_vhosts.

AddVhost and DeleteVhost need an administrator (the control socket, the
token, or a user tagged administrator), ListVhosts a monitoring user; the
rule table (``auth/rules.py``) refuses everyone else first.

Deleting a vhost closes its connections, deletes its queues and exchanges
one by one as DeleteQueue and DeleteExchange do (their consumers cancelled,
their rows deleted in the same batch), drops the task layer's memory of it
(``vhost_deleted_hooks``) and, in the store, its permissions and the rows of
results, revocations, schedules and groups under its prefix. The Ok waits
for the commit. ``add`` and ``remove`` are the operations themselves, also
used by the management API's ``PUT``/``DELETE /api/vhosts/{name}`` and
its definitions import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

import brokerd_protocol as bp
from brokerd_protocol import ErrorCode

from ..auth.users import ADMINISTRATOR, Users
from ..broker import Broker
from ..config import Config
from ..errors import BrokerError, not_found
from ..vhosts import DEFAULT_VHOST, Registry, check_vhost, split, vhost_prefix
from . import listing

log = logging.getLogger("brokerd.admin")

VHOST_KEY: listing.KeyCheck = lambda v: type(v) is str  # noqa: E731


class VhostSession(Protocol):
    admin: bool
    access: Any
    vhost: str
    peer_name: str

    def reply_ok(self, req: int, value: Any = None) -> None: ...

    def reply_error(self, req: int, exc: BrokerError) -> None: ...

    def close_by_admin(self, reason: str) -> None: ...


class Host(Protocol):
    @property
    def broker(self) -> Broker: ...

    @property
    def config(self) -> Config: ...

    @property
    def sessions(self) -> Collection[Any]: ...

    @property
    def users(self) -> Users: ...

    @property
    def vhosts(self) -> Registry: ...

    @property
    def vhost_deleted_hooks(self) -> list[Callable[[str], None]]: ...

    def add_extension(self, handlers: Mapping[type[bp.Frame], Any]) -> None: ...


Handler = Callable[[VhostSession, Any], None]


class VhostAdmin:
    def __init__(self, host: Host) -> None:
        self.host = host

    def handlers(self) -> dict[type[bp.Frame], Handler]:
        return {
            bp.AddVhost: self.add_vhost,
            bp.DeleteVhost: self.delete_vhost,
            bp.ListVhosts: self.list_vhosts,
        }

    @staticmethod
    def _check(session: VhostSession, frame: bp.Frame, *, administrator: bool) -> None:
        access = session.access
        if not session.admin or (
            administrator and access is not None and ADMINISTRATOR not in access.tags
        ):
            who = "an administrator" if administrator else "a monitoring user"
            raise BrokerError(
                ErrorCode.ACCESS_REFUSED,
                f"{type(frame).__name__} needs {who} (or the control socket, or the "
                "broker's token)",
            )

    def _after_commit(self, session: VhostSession, req: int, what: str) -> None:
        def committed(error: BaseException | None) -> None:
            if session not in self.host.sessions:
                return
            if error is not None:
                session.reply_error(
                    req, BrokerError(ErrorCode.INTERNAL, f"storing the {what} failed: {error}")
                )
            else:
                session.reply_ok(req)

        self.host.broker.batch.after_commit(committed)

    # --- the operations themselves, for the frames and the management API -------------

    def add(self, name: str) -> str:
        """Create vhost ``name`` into the batch (``PRECONDITION_FAILED`` if it exists)."""
        name = check_vhost(name)
        if self.host.vhosts.exists(name):
            raise BrokerError(ErrorCode.PRECONDITION_FAILED, f"vhost {name!r} already exists")
        self.host.vhosts.add(name, self.host.broker.batch)
        return name

    def remove(self, name: str, *, keep: object = None) -> None:
        """Delete vhost ``name`` and everything in it; close its connections
        (but ``keep``, the one asking). '/' is refused."""
        if name == DEFAULT_VHOST:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED, "the vhost '/' cannot be deleted")
        if not self.host.vhosts.exists(name):
            raise not_found(f"vhost {name!r} does not exist")
        host = self.host
        broker = host.broker
        for s in list(host.sessions):
            if s is not keep and getattr(s, "vhost", None) == name:
                s.close_by_admin(f"vhost {name!r} was deleted")
        for queue in [q for q in broker.queues if split(q)[0] == name]:
            broker.delete_queue(queue)
        for exchange in [e for e in broker.exchanges if split(e)[0] == name]:
            broker.delete_exchange(exchange)
        users = host.users
        for key in [k for k in users.permissions if k[1] == name]:
            del users.permissions[key]
        prefix = vhost_prefix(name)
        for hook in host.vhost_deleted_hooks:
            hook(prefix)
        host.vhosts.delete(name, broker.batch)

    # --- the frames ---------------------------------------------------------------------

    def add_vhost(self, session: VhostSession, f: bp.AddVhost) -> None:
        self._check(session, f, administrator=True)
        name = self.add(f.name)
        log.info("vhost %r added by %s", name, session.peer_name)
        self._after_commit(session, f.req, "vhost")

    def delete_vhost(self, session: VhostSession, f: bp.DeleteVhost) -> None:
        self._check(session, f, administrator=True)
        name = f.name
        self.remove(name, keep=session)
        log.info("vhost %r deleted by %s", name, session.peer_name)
        self._after_commit(session, f.req, "deletion")

    def list_vhosts(self, session: VhostSession, f: bp.ListVhosts) -> None:
        self._check(session, f, administrator=False)
        counts: dict[str, list[int]] = {v: [0, 0] for v in self.host.vhosts.all()}
        for internal, q in self.host.broker.queues.items():
            entry = counts.get(split(internal)[0])
            if entry is not None:
                stats = q.stats()
                entry[0] += 1
                entry[1] += stats["ready"] + stats["leased"] + stats["delayed"]
        access = session.access
        only = None if access is None or ADMINISTRATOR in access.tags else session.vhost
        rows: list[listing.Row] = [
            (v, {"name": v, "queues": n, "messages": m})
            for v, (n, m) in counts.items()
            if only is None or v == only
        ]
        budget = self.host.config.max_frame // 2
        session.reply_ok(f.req, listing.page(rows, f.cursor, f.limit, budget, VHOST_KEY))


def install(server: Host) -> VhostAdmin:
    """Wire the vhost frames into ``server`` (``brokerd.cli.build_server``)."""
    ext = VhostAdmin(server)
    server.add_extension(ext.handlers())
    return ext
