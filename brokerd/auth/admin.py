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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
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
            password_hash = _checked(check_hash, f.password_hash)
            self.users.put(User(name, password_hash, tags), self.host.broker.batch)
            log.info("user %r added (with its hash) by %s", name, session.peer_name)
            self._after_commit(session, f.req, "user")
            return
        password = _checked(check_password, f.password)

        def store(password_hash: str) -> None:
            if self.users.get(name) is not None:  # added while we hashed
                raise BrokerError(ErrorCode.PRECONDITION_FAILED, f"user '{name}' already exists")
            self.users.put(User(name, password_hash, tags), self.host.broker.batch)
            log.info("user %r added by %s", name, session.peer_name)
            self._after_commit(session, f.req, "user")

        self._hashed(session, f.req, password, store)

    def delete_user(self, session: UserSession, f: bp.DeleteUser) -> None:
        self._check(session, f)
        self._existing(f.name)
        self.users.delete(f.name, self.host.broker.batch)
        log.info("user %r deleted by %s", f.name, session.peer_name)
        self._after_commit(session, f.req, "deletion")
        for s in self._sessions_of(f.name):
            if s is not session:
                s.close_by_admin(f"user '{f.name}' was deleted")

    def update_user(self, session: UserSession, f: bp.UpdateUser) -> None:
        self._check(session, f)
        user = self._existing(f.name)
        tags = user.tags if f.tags is None else _checked(check_tags, f.tags)
        if f.password is None:
            self.users.put(User(user.name, user.password_hash, tags), self.host.broker.batch)
            self._refresh(user.name)
            self._after_commit(session, f.req, "user")
            return
        password = _checked(check_password, f.password)

        def store(password_hash: str) -> None:
            current = self._existing(f.name)  # deleted while we hashed?
            new_tags = current.tags if f.tags is None else tags
            self.users.put(User(current.name, password_hash, new_tags), self.host.broker.batch)
            log.info("password of user %r changed by %s", f.name, session.peer_name)
            self._refresh(current.name)
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
        self._existing(f.user)
        if not f.vhost:
            raise invalid("a vhost name must not be empty")
        perm = Permission(
            _checked(lambda p: check_pattern("configure", p), f.configure),
            _checked(lambda p: check_pattern("write", p), f.write),
            _checked(lambda p: check_pattern("read", p), f.read),
        )
        self.users.set_permission(f.user, f.vhost, perm, self.host.broker.batch)
        self._refresh(f.user)
        self._after_commit(session, f.req, "permissions")

    def clear_permissions(self, session: UserSession, f: bp.ClearPermissions) -> None:
        self._check(session, f)
        self._existing(f.user)
        if self.users.permission(f.user, f.vhost) is None:
            raise not_found(f"user '{f.user}' has no permissions on vhost '{f.vhost}'")
        self.users.clear_permission(f.user, f.vhost, self.host.broker.batch)
        self._refresh(f.user)
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
