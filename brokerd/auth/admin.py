"""The admin frames that manage users and permissions (68-74, SPEC §17.6),
one extension of the broker's server, for brokerctl's add_user & co.

Who may send them: an admin connection (``Session.admin``) whose rights are
everything (control socket, token, broker without users) or a user tagged
administrator; the rule table (``rules.py``) refuses everyone else first,
and ``_check`` here says so again so the handlers never rely on the order.

Every change goes into the broker's batch with the in-memory change, and the
Ok waits for its commit. Passwords are hashed off the loop (``Verifier``);
the frame that carried one is not kept. Open connections follow at once:
new tags or permissions rebuild their ``Access``, a deleted user's
connections are closed; a new password applies to later connections.

The operations themselves (``put_user``, ``remove_user``, ``put_permission``,
``remove_permission``, ``hash_password``) are plain methods: the frames call
them, and so does the management API's ``PUT``/``DELETE /api/users``,
``/api/permissions``, ``POST /api/users/bulk-delete`` (``brokerd.management.api``)
and ``POST /api/definitions`` (``brokerd.management.definitions``), each
waiting for the commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Protocol

import brokerd_protocol as bp
from brokerd_protocol import ErrorCode

from ..admin import listing
from ..broker import Broker
from ..config import Config
from ..errors import BrokerError, invalid, not_found
from .access import Access
from .passwords import check_hash, check_password
from .users import (
    ADMINISTRATOR,
    Permission,
    User,
    Users,
    check_pattern,
    check_tags,
    check_user_name,
)
from .verifier import Verifier

log = logging.getLogger("brokerd.auth")

USER_KEY: listing.KeyCheck = lambda v: type(v) is str  # noqa: E731
PERMISSION_KEY: listing.KeyCheck = lambda v: (  # noqa: E731
    type(v) is list and len(v) == 2 and all(type(x) is str for x in v)
)


class UserSession(Protocol):
    """What this layer needs of a connection (``Session``)."""

    admin: bool
    access: Access | None
    user: str | None
    vhost: str
    peer_name: str

    def reply_ok(self, req: int, value: Any = None) -> None: ...

    def reply_error(self, req: int, exc: BrokerError) -> None: ...

    def close_by_admin(self, reason: str) -> None: ...

    def set_access(self, users: Users) -> None: ...


class Host(Protocol):
    """What this layer needs of the server (``BrokerServer``)."""

    @property
    def broker(self) -> Broker: ...

    @property
    def config(self) -> Config: ...

    @property
    def sessions(self) -> Collection[Any]: ...

    @property
    def users(self) -> Users: ...

    @property
    def verifier(self) -> Verifier: ...

    def add_extension(self, handlers: Mapping[type[bp.Frame], Any]) -> None: ...


Handler = Callable[[UserSession, Any], None]


def _checked(check: Callable[[Any], Any], value: Any) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise invalid(str(exc)) from None


class UserAdmin:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.users = host.users

    def handlers(self) -> dict[type[bp.Frame], Handler]:
        return {
            bp.AddUser: self.add_user,
            bp.DeleteUser: self.delete_user,
            bp.UpdateUser: self.update_user,
            bp.ListUsers: self.list_users,
            bp.SetPermissions: self.set_permissions,
            bp.ClearPermissions: self.clear_permissions,
            bp.ListPermissions: self.list_permissions,
        }

    # --- who may ask, and answering after the commit -------------------------------

    @staticmethod
    def _check(session: UserSession, frame: bp.Frame) -> None:
        access = session.access
        if not session.admin or (access is not None and ADMINISTRATOR not in access.tags):
            raise BrokerError(
                ErrorCode.ACCESS_REFUSED,
                f"{type(frame).__name__} needs an administrator (the control socket, the "
                "broker's token, or a user tagged administrator)",
            )

    def _after_commit(self, session: UserSession, req: int, what: str) -> None:
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

    def _sessions_of(self, user: str) -> list[UserSession]:
        return [s for s in self.host.sessions if getattr(s, "user", None) == user]

    def _refresh(self, user: str) -> None:
        for s in self._sessions_of(user):
            s.set_access(self.users)

    def _existing(self, name: str) -> User:
        user = self.users.get(name)
        if user is None:
            raise not_found(f"no user '{name}'")
        return user

    def _hashed(
        self,
        session: UserSession,
        req: int,
        password: str,
        then: Callable[[str], None],
    ) -> None:
        """Hash ``password`` off the loop, then ``then(hash)`` on it; a failure
        (of the hashing, or raised by ``then``) answers the request."""

        def done(result: str | BaseException) -> None:
            if session not in self.host.sessions:
                return
            try:
                if isinstance(result, BaseException):
                    raise BrokerError(ErrorCode.INTERNAL, f"hashing the password failed: {result}")
                then(result)
            except BrokerError as exc:
                session.reply_error(req, exc)

        self.host.verifier.hash(password, done)

    # --- the operations themselves, for the frames and the management API -------------
    #
    # Each checks, changes memory and the broker's batch, and makes open
    # connections follow; the caller waits for the commit to answer.

    async def hash_password(self, password: str) -> str:
        """``password`` checked and hashed off the loop (``invalid`` if it cannot be one)."""
        password = _checked(check_password, password)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def done(result: str | BaseException) -> None:
            if future.done():
                return
            if isinstance(result, BaseException):
                future.set_exception(
                    BrokerError(ErrorCode.INTERNAL, f"hashing the password failed: {result}")
                )
            else:
                future.set_result(result)

        self.host.verifier.hash(password, done)
        return await future

    def put_user(self, name: str, password_hash: str, tags: Iterable[str]) -> User:
        """Create or replace user ``name`` (``password_hash`` as stored); its
        open connections take the new tags at once."""
        user = User(_checked(check_user_name, name), password_hash, _checked(check_tags, tags))
        self.users.put(user, self.host.broker.batch)
        self._refresh(user.name)
        return user

    def remove_user(self, name: str, *, keep: object = None) -> None:
        """Delete user ``name`` (``not_found`` if none) with its permissions,
        and close its connections (but ``keep``, the one asking)."""
        self._existing(name)
        self.users.delete(name, self.host.broker.batch)
        for s in self._sessions_of(name):
            if s is not keep:
                s.close_by_admin(f"user '{name}' was deleted")

    def put_permission(self, user: str, vhost: str, configure: str, write: str, read: str) -> None:
        """Set ``user``'s patterns on ``vhost``; its open connections follow."""
        self._existing(user)
        if not vhost:
            raise invalid("a vhost name must not be empty")
        perm = Permission(
            _checked(lambda p: check_pattern("configure", p), configure),
            _checked(lambda p: check_pattern("write", p), write),
            _checked(lambda p: check_pattern("read", p), read),
        )
        self.users.set_permission(user, vhost, perm, self.host.broker.batch)
        self._refresh(user)

    def remove_permission(self, user: str, vhost: str) -> None:
        """Clear ``user``'s patterns on ``vhost`` (``not_found`` if none)."""
        self._existing(user)
        if self.users.permission(user, vhost) is None:
            raise not_found(f"user '{user}' has no permissions on vhost '{vhost}'")
        self.users.clear_permission(user, vhost, self.host.broker.batch)
        self._refresh(user)

    # --- users ------------------------------------------------------------------------

    def add_user(self, session: UserSession, f: bp.AddUser) -> None:
        self._check(session, f)
        name = _checked(check_user_name, f.name)
        tags = _checked(check_tags, f.tags)
        if self.users.get(name) is not None:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED, f"user '{name}' already exists")
        if f.password_hash is not None:
            # Imported definitions: the hash as exported, stored as it is.
            if f.password:
                raise invalid("give a password or a password_hash, not both")
            self.put_user(name, _checked(check_hash, f.password_hash), tags)
            log.info("user %r added (with its hash) by %s", name, session.peer_name)
            self._after_commit(session, f.req, "user")
            return
        password = _checked(check_password, f.password)

        def store(password_hash: str) -> None:
            if self.users.get(name) is not None:  # added while we hashed
                raise BrokerError(ErrorCode.PRECONDITION_FAILED, f"user '{name}' already exists")
            self.put_user(name, password_hash, tags)
            log.info("user %r added by %s", name, session.peer_name)
            self._after_commit(session, f.req, "user")

        self._hashed(session, f.req, password, store)

    def delete_user(self, session: UserSession, f: bp.DeleteUser) -> None:
        self._check(session, f)
        self.remove_user(f.name, keep=session)
        log.info("user %r deleted by %s", f.name, session.peer_name)
        self._after_commit(session, f.req, "deletion")

    def update_user(self, session: UserSession, f: bp.UpdateUser) -> None:
        self._check(session, f)
        user = self._existing(f.name)
        tags = user.tags if f.tags is None else _checked(check_tags, f.tags)
        if f.password is None:
            self.put_user(user.name, user.password_hash, tags)
            self._after_commit(session, f.req, "user")
            return
        password = _checked(check_password, f.password)

        def store(password_hash: str) -> None:
            current = self._existing(f.name)  # deleted while we hashed?
            new_tags = current.tags if f.tags is None else tags
            self.put_user(current.name, password_hash, new_tags)
            log.info("password of user %r changed by %s", f.name, session.peer_name)
            self._after_commit(session, f.req, "user")

        self._hashed(session, f.req, password, store)

    def list_users(self, session: UserSession, f: bp.ListUsers) -> None:
        self._check(session, f)
        rows: list[listing.Row] = [
            (u.name, {"name": u.name, "tags": sorted(u.tags)}) for u in self.users.users.values()
        ]
        if f.hashes:  # for export_definitions; administrators only, as every user frame
            for _, row in rows:
                row["password_hash"] = self.users.users[row["name"]].password_hash
        budget = self.host.config.max_frame // 2
        session.reply_ok(f.req, listing.page(rows, f.cursor, f.limit, budget, USER_KEY))

    # --- permissions ------------------------------------------------------------------

    def set_permissions(self, session: UserSession, f: bp.SetPermissions) -> None:
        self._check(session, f)
        self.put_permission(f.user, f.vhost, f.configure, f.write, f.read)
        self._after_commit(session, f.req, "permissions")

    def clear_permissions(self, session: UserSession, f: bp.ClearPermissions) -> None:
        self._check(session, f)
        self.remove_permission(f.user, f.vhost)
        self._after_commit(session, f.req, "permissions")

    def list_permissions(self, session: UserSession, f: bp.ListPermissions) -> None:
        self._check(session, f)
        rows: list[listing.Row] = [
            (
                [user, vhost],
                {
                    "user": user,
                    "vhost": vhost,
                    "configure": p.configure,
                    "write": p.write,
                    "read": p.read,
                },
            )
            for (user, vhost), p in self.users.permissions.items()
            if (f.vhost is None or vhost == f.vhost) and (f.user is None or user == f.user)
        ]
        budget = self.host.config.max_frame // 2
        session.reply_ok(f.req, listing.page(rows, f.cursor, f.limit, budget, PERMISSION_KEY))


def install(server: Host) -> UserAdmin:
    """Wire the user frames into ``server`` (``brokerd.cli.build_server``)."""
    ext = UserAdmin(server)
    server.add_extension(ext.handlers())
    return ext
