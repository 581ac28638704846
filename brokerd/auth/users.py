"""The broker's users, their tags and their permissions per vhost, in memory.

The store is the record (``Op.PUT_USER`` ... ``Query.PERMISSIONS``); this is
its copy on the event loop, loaded once at start (``load``) and changed only
together with a batch that writes the same change, so the two never disagree
after a commit. Nothing here hashes or checks a password (``passwords.py``,
``verifier.py``) or decides a frame (``access.py``, ``rules.py``).

Invariants:
* ``permissions`` only names users in ``users`` (deleting a user drops them).
* A tag is one of ``TAGS``; a pattern is a regular expression that compiles.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..storage.base import Batch, Query, Row, Store

__all__ = [
    "DEFAULT_VHOST",
    "TAGS",
    "Permission",
    "User",
    "Users",
    "check_pattern",
    "check_tags",
    "check_user_name",
]

#: The vhost every session is on until vhosts exist.
DEFAULT_VHOST = "/"
ADMINISTRATOR = "administrator"
MONITORING = "monitoring"
MANAGEMENT = "management"
#: The tags a user may carry (RabbitMQ's names).
TAGS = frozenset({ADMINISTRATOR, MANAGEMENT, MONITORING})
MAX_NAME = 255
MAX_PATTERN = 4096


@dataclass(slots=True)
class User:
    name: str
    password_hash: str = field(repr=False)
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Permission:
    """Regular expressions over resource names; ``""`` allows nothing."""

    configure: str
    write: str
    read: str


def check_user_name(name: str) -> str:
    if not name or len(name) > MAX_NAME:
        raise ValueError(f"a user name has 1 to {MAX_NAME} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError("a user name must not contain control characters")
    return name


def check_tags(tags: Iterable[str]) -> frozenset[str]:
    given = frozenset(t.strip() for t in tags if t.strip())
    unknown = sorted(given - TAGS)
    if unknown:
        raise ValueError(
            f"unknown tag(s) {', '.join(unknown)}: the tags are {', '.join(sorted(TAGS))}"
        )
    return given


def check_pattern(what: str, pattern: str) -> str:
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"the {what} pattern is longer than {MAX_PATTERN} characters")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(
            f"the {what} pattern {pattern!r} is not a regular expression: {exc}"
        ) from None
    return pattern


def tags_text(tags: Iterable[str]) -> str:
    return ",".join(sorted(tags))


class Users:
    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        #: (user, vhost) -> its patterns.
        self.permissions: dict[tuple[str, str], Permission] = {}

    @property
    def defined(self) -> bool:
        """Whether any user exists (then every client must authenticate)."""
        return bool(self.users)

    def get(self, name: str) -> User | None:
        return self.users.get(name)

    def permission(self, user: str, vhost: str) -> Permission | None:
        return self.permissions.get((user, vhost))

    # --- start-up -------------------------------------------------------------------

    def loaded_users(self, rows: list[Row]) -> None:
        for name, password_hash, tags in rows:
            self.users[name] = User(name, password_hash, frozenset(t for t in tags.split(",") if t))

    def loaded_permissions(self, rows: list[Row]) -> None:
        for user, vhost, configure, write, read in rows:
            if user in self.users:
                self.permissions[(user, vhost)] = Permission(configure, write, read)

    # --- changes (each with the batch that stores it) -------------------------------

    def put(self, user: User, batch: Batch) -> None:
        self.users[user.name] = user
        batch.put_user(user.name, user.password_hash, tags_text(user.tags))

    def delete(self, name: str, batch: Batch) -> None:
        del self.users[name]
        for key in [k for k in self.permissions if k[0] == name]:
            del self.permissions[key]
        batch.delete_user(name)

    def set_permission(self, user: str, vhost: str, perm: Permission, batch: Batch) -> None:
        self.permissions[(user, vhost)] = perm
        batch.put_permission(user, vhost, perm.configure, perm.write, perm.read)

    def clear_permission(self, user: str, vhost: str, batch: Batch) -> None:
        del self.permissions[(user, vhost)]
        batch.delete_permission(user, vhost)


async def load(users: Users, store: Store) -> None:
    """Read every user and permission from ``store`` into ``users`` (start-up)."""
    loop = asyncio.get_running_loop()
    parts = ((Query.USERS, users.loaded_users), (Query.PERMISSIONS, users.loaded_permissions))
    for query, apply in parts:
        future: asyncio.Future[list[Row] | BaseException] = loop.create_future()
        store.read(query, (), future.set_result)
        rows = await future
        if isinstance(rows, BaseException):
            raise RuntimeError(f"loading users and permissions failed: {rows}") from rows
        apply(rows)
