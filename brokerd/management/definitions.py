"""RabbitMQ's definitions over HTTP: ``GET /api/definitions`` exports the
broker's topology (and, broker-wide, its vhosts, users with their password
hashes and permissions), ``POST /api/definitions`` imports such a document.

This module only maps documents to the broker's own operations, never
around them: vhosts, users and permissions through ``VhostAdmin`` and
``UserAdmin`` (the operations the admin frames and ``PUT /api/users`` use,
so open connections follow at once), exchanges, queues and bindings as
their declare frames would (the core's checks apply, an existing one must
match). Nothing here decides who may ask (the API checks for an
administrator first).

Invariants of an import:
* Every item is checked before any is applied; a fault anywhere applies
  nothing. Only what applying alone can find (a declaration that clashes
  with an existing one) is reported after the rest is applied.
* No await between the first change and the last: the whole document goes
  into one store batch, and the answer waits for its commit.
* A password is hashed and dropped; neither it nor anything derived from it
  but the stored hash is kept, logged or exported.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from brokerd_protocol.definitions import not_imported, summary

from ..admin import listing
from ..admin.vhosts import VhostAdmin
from ..auth.admin import UserAdmin
from ..auth.passwords import check_hash, check_password
from ..auth.users import DEFAULT_VHOST, Users, check_pattern, check_tags, check_user_name
from ..broker import Broker
from ..errors import BrokerError, not_found
from ..options import check_name
from ..vhosts import Names, Registry, check_vhost, split
from . import declarations
from .events import QUEUE as EVENTS_QUEUE
from .http import HTTPError, Response

log = logging.getLogger("brokerd.management")
T = TypeVar("T")

#: What brokerd's exported password hashes are (``auth/passwords.py``: scrypt).
HASHING_ALGORITHM = "brokerd_scrypt"
#: Users with a plaintext password one import hashes at most (scrypt costs
#: tens of milliseconds and 16 MiB each: a request must not hold a hashing
#: thread for minutes).
MAX_PASSWORDS = 100


class Host(Protocol):
    """What definitions read and change of the server (``BrokerServer``)."""

    @property
    def broker(self) -> Broker: ...

    @property
    def users(self) -> Users: ...

    @property
    def vhosts(self) -> Registry: ...

    @property
    def sessions(self) -> Collection[Any]: ...


async def committed(broker: Broker, what: str) -> None:
    """Wait for the broker's batch (with the changes just made) to commit;
    503 naming ``what`` if storing it failed."""
    future: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def done(error: BaseException | None) -> None:
        if not future.done():
            future.set_result(error)

    broker.batch.after_commit(done)
    error = await future
    if error is not None:
        raise HTTPError(503, f"storing the {what} failed: {error}")


def permission_rows(users: Users) -> list[dict[str, Any]]:
    """Every user's permissions, RabbitMQ's fields, sorted by (user, vhost)."""
    return [
        {
            "user": user,
            "vhost": vhost,
            "configure": perm.configure,
            "write": perm.write,
            "read": perm.read,
        }
        for (user, vhost), perm in sorted(users.permissions.items())
    ]


def binding_rows(broker: Broker, vhost: str | None = None) -> list[dict[str, Any]]:
    """The explicit bindings of ``vhost`` (or every vhost), RabbitMQ's fields."""
    rows = listing.binding_rows(broker.exchanges, vhost)
    rows.sort(key=lambda r: (r[1]["vhost"], r[1]["exchange"], r[1]["queue"], r[1]["routing_key"]))
    return [
        {
            "source": row["exchange"],
            "vhost": row["vhost"],
            "destination": row["queue"],
            "destination_type": "queue",
            "routing_key": row["routing_key"],
            "arguments": {},
            "properties_key": declarations.properties_key(row["routing_key"]),
        }
        for _, row in rows
    ]


def export(host: Host, version: str, vhost: str | None) -> dict[str, Any]:
    """RabbitMQ's definitions export: the topology of ``vhost`` (or of
    every vhost, with the vhosts, users with their password hashes and
    the permissions)."""
    broker = host.broker
    now = broker.clock.now()
    queues = []
    rows = listing.queue_rows(broker.queues, now, vhost)
    rows.sort(key=lambda r: (r[1]["vhost"], r[1]["name"]))
    for _, row in rows:
        if row["name"] == EVENTS_QUEUE:
            continue
        options = {k: v for k, v in row["options"].items() if v is not None}
        queues.append(
            {
                "name": row["name"],
                "vhost": row["vhost"],
                "durable": row["durable"],
                "auto_delete": bool(options.get("auto_delete")),
                "arguments": options,
            }
        )
    ex_rows = listing.exchange_rows(broker.exchanges, vhost, host.vhosts.all())
    ex_rows.sort(key=lambda r: (r[1]["vhost"], r[1]["name"]))
    exchanges = [
        {**row, "auto_delete": False, "internal": False, "arguments": {}}
        for _, row in ex_rows
        if row["name"]
    ]
    out: dict[str, Any] = {
        "product_name": "brokerd",
        "product_version": version,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": [
            {k: v for k, v in b.items() if k != "properties_key"}
            for b in binding_rows(broker, vhost)
            if b["destination"] != EVENTS_QUEUE
        ],
    }
    if vhost is None:
        users = host.users
        out["vhosts"] = [{"name": v} for v in host.vhosts.all()]
        out["users"] = [
            {
                "name": u.name,
                "password_hash": u.password_hash,
                "hashing_algorithm": HASHING_ALGORITHM,
                "tags": sorted(u.tags),
            }
            for u in sorted(users.users.values(), key=lambda u: u.name)
        ]
        out["permissions"] = permission_rows(users)
    return out


def tag_list(value: Any) -> list[str]:
    """RabbitMQ's tags: a comma-separated string (before 3.12) or a list of
    strings; ``ValueError`` otherwise."""
    if isinstance(value, str):
        return value.split(",")
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return value
    raise ValueError("tags must be a comma-separated string or a list of strings")


@dataclass(slots=True)
class _User:
    name: str
    tags: frozenset[str]
    #: Exactly one of these, or neither for an existing user (kept as it is).
    password: str | None
    password_hash: str | None


@dataclass(slots=True)
class _Plan:
    """A document, checked: what importing it does, in order."""

    vhosts: list[str] = field(default_factory=list)
    users: list[_User] = field(default_factory=list)
    #: (user, vhost, configure, write, read)
    permissions: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    #: (vhost's names, name, type, durable)
    exchanges: list[tuple[Names, str, str, bool]] = field(default_factory=list)
    #: (vhost's names, name, durable, options as the declare frame carries them)
    queues: list[tuple[Names, str, bool, dict[str, Any]]] = field(default_factory=list)
    #: (vhost's names, source, destination, routing key)
    bindings: list[tuple[Names, str, str, str]] = field(default_factory=list)
    #: The existing vhosts the items above go into.
    into: set[str] = field(default_factory=set)


def _objects(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = body.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise HTTPError(400, f"{key} must be a list of objects")
    return value


def _checked(errors: list[str], label: str, check: Callable[[], T]) -> T | None:
    """``check()``, or None with its refusal added to ``errors`` under ``label``."""
    try:
        return check()
    except ValueError as exc:
        errors.append(f"{label}: {exc}")
    except BrokerError as exc:
        errors.append(f"{label}: {exc.message}")
    return None


def _strings(item: dict[str, Any], *keys: str) -> list[str] | None:
    values = [item.get(k) for k in keys]
    if all(isinstance(v, str) for v in values):
        return values  # type: ignore[return-value]
    return None


def _plan(host: Host, body: dict[str, Any], only: str | None) -> tuple[_Plan, list[str]]:
    """Check every item of ``body`` against the broker as it is plus what the
    document itself creates; the plan, and what is wrong (each item named)."""
    plan = _Plan()
    errors: list[str] = []
    registry = host.vhosts
    sections = {
        key: _objects(body, key)
        for key in ("vhosts", "users", "permissions", "exchanges", "queues", "bindings")
    }

    # Vhosts: with a vhost in the path everything lands in it, so none is created.
    vhosts = set(registry.all())
    if only is None:
        for v in sections["vhosts"]:
            name = v.get("name")
            try:
                check_vhost(name)  # type: ignore[arg-type]
            except BrokerError as exc:
                errors.append(f"vhost {name!r}: {exc.message}")
                continue
            assert isinstance(name, str)
            if name not in vhosts:
                vhosts.add(name)
                plan.vhosts.append(name)

    def vhost_of(item: dict[str, Any], label: str) -> str | None:
        vhost = only if only is not None else item.get("vhost", DEFAULT_VHOST)
        if not isinstance(vhost, str) or vhost not in vhosts:
            errors.append(f"{label}: no vhost {vhost!r} (nor in the document's vhosts)")
            return None
        if vhost not in plan.vhosts:
            plan.into.add(vhost)
        return vhost

    # Users: replaced as RabbitMQ's import does; a hash only in brokerd's form.
    users = set(host.users.users)
    seen: set[str] = set()
    for u in sections["users"]:
        name = u.get("name")
        label = f"user {name!r}"
        try:
            if not isinstance(name, str):
                raise ValueError("the name must be a string")
            check_user_name(name)
            if name in seen:
                raise ValueError("named twice")
            tags = check_tags(tag_list(u.get("tags", [])))
            password, password_hash = u.get("password"), u.get("password_hash") or None
            if password is not None and password_hash is not None:
                raise ValueError("give a password or a password_hash, not both")
            if password is not None:
                if not isinstance(password, str):
                    raise ValueError("the password must be a string")
                check_password(password)
            elif password_hash is not None:
                algorithm = u.get("hashing_algorithm", HASHING_ALGORITHM)
                if algorithm != HASHING_ALGORITHM:
                    raise ValueError(
                        f"its password_hash is {algorithm!r}, which brokerd cannot verify "
                        f"(brokerd's hashes are {HASHING_ALGORITHM}): give a password instead"
                    )
                if not isinstance(password_hash, str):
                    raise ValueError("the password_hash must be a string")
                check_hash(password_hash)
            elif name not in users:
                raise ValueError("a new user needs a password or a password_hash")
        except ValueError as exc:
            errors.append(f"{label}: {exc}")
            continue
        seen.add(name)
        plan.users.append(_User(name, tags, password, password_hash))
    users |= seen
    plaintext = sum(1 for u in plan.users if u.password is not None)
    if plaintext > MAX_PASSWORDS:
        errors.append(
            f"{plaintext} users with a password: at most {MAX_PASSWORDS} per import (each is "
            "hashed with scrypt, tens of milliseconds); give the others a password_hash"
        )

    granted: set[tuple[str, str]] = set()
    for p in sections["permissions"]:
        user = p.get("user")
        label = f"permission of {user!r}"
        vhost = vhost_of(p, label)
        if vhost is None:
            continue
        label = f"permission of {user!r} on {vhost!r}"
        patterns = _strings(p, "configure", "write", "read")
        if not isinstance(user, str) or user not in users:
            errors.append(f"{label}: no user {user!r} (nor in the document's users)")
        elif patterns is None:
            errors.append(f"{label}: configure, write and read must all be given, as strings")
        elif (user, vhost) in granted:
            errors.append(f"{label}: given twice")
        else:
            try:
                for what, pattern in zip(("configure", "write", "read"), patterns, strict=True):
                    check_pattern(what, pattern)
            except ValueError as exc:
                errors.append(f"{label}: {exc}")
                continue
            granted.add((user, vhost))
            plan.permissions.append((user, vhost, *patterns))  # type: ignore[arg-type]

    # Topology: what the core checks without changing anything is checked here.
    exchanges = {(v, n) for v, n in map(split, host.broker.exchanges)}
    for e in sections["exchanges"]:
        label = f"exchange {e.get('name')!r}"
        vhost = vhost_of(e, label)
        if vhost is None:
            continue
        name = e.get("name")
        if not isinstance(name, str) or not name:
            errors.append(f"{label}: the name must be a string, not empty")
            continue
        names = Names.of(vhost)

        def exchange_checked(
            e: dict[str, Any] = e, names: Names = names, name: str = name
        ) -> tuple[str, bool]:
            settings = declarations.exchange_settings(e)
            check_name("exchange", names.exchange_in(name))
            return settings

        settings = _checked(errors, label, exchange_checked)
        if settings is None:
            continue
        etype, durable = settings
        exchanges.add((vhost, name))
        plan.exchanges.append((names, name, etype, durable))
    queues = {(v, n) for v, n in map(split, host.broker.queues)}
    for q in sections["queues"]:
        label = f"queue {q.get('name')!r}"
        vhost = vhost_of(q, label)
        if vhost is None:
            continue
        name = q.get("name")
        if not isinstance(name, str):
            errors.append(f"{label}: the name must be a string")
            continue
        names = Names.of(vhost)

        def queue_checked(
            q: dict[str, Any] = q, names: Names = names, name: str = name
        ) -> tuple[bool, Any]:
            check_name("queue", names.inn(name))
            return declarations.queue_settings(q, names)

        settings_q = _checked(errors, label, queue_checked)
        if settings_q is None:
            continue
        durable, options = settings_q
        queues.add((vhost, name))
        plan.queues.append((names, name, durable, options))
    for b in sections["bindings"]:
        label = f"binding {b.get('source')!r} -> {b.get('destination')!r}"
        vhost = vhost_of(b, label)
        if vhost is None:
            continue
        fields = _strings(b, "source", "destination")
        key = b.get("routing_key", "")
        if b.get("destination_type", "queue") != "queue":
            errors.append(f"{label}: only queues are destinations")
        elif fields is None or not isinstance(key, str):
            errors.append(f"{label}: source, destination and routing_key must be strings")
        elif not fields[0] or (vhost, fields[0]) not in exchanges:
            errors.append(f"{label}: no exchange {fields[0]!r} (nor in the document)")
        elif (vhost, fields[1]) not in queues:
            errors.append(f"{label}: no queue {fields[1]!r} (nor in the document)")
        else:
            plan.bindings.append((Names.of(vhost), fields[0], fields[1], key))
    return plan, errors


async def import_definitions(
    host: Host, admins: tuple[UserAdmin, VhostAdmin], body: dict[str, Any], only: str | None
) -> Response:
    """Import a definitions document: vhosts, users, permissions, then
    exchanges, queues and bindings (each as its declare frame would: an
    existing one must match), in the vhost each names (``only``: the path's
    vhost, for all of them; then no vhost is created).

    Every item is checked first against the broker and the document; if one
    is wrong the answer is 400 naming each, and nothing is applied. Then
    passwords are hashed (off the loop), and everything is applied in one
    go, into one batch. What only applying can find (a queue or exchange
    that exists with other settings) is named in a 400 after the rest is
    applied. Answers once durable."""
    user_admin, vhost_admin = admins
    plan, errors = _plan(host, body, only)
    if errors:
        return _refused(errors, applied=False)
    hashes: dict[str, str] = {}
    for u in plan.users:
        if u.password is not None:
            try:
                hashes[u.name] = await user_admin.hash_password(u.password)
            except BrokerError as exc:
                return _refused([f"user {u.name!r}: {exc.message}"], applied=False)
    # From here on, no await until everything is in the batch.
    gone = sorted(v for v in plan.into if not host.vhosts.exists(v))
    if gone:  # deleted while the passwords were hashed
        return _refused([f"vhost {v!r} was deleted during the import" for v in gone], applied=False)
    broker = host.broker
    for vhost in plan.vhosts:
        if not host.vhosts.exists(vhost):  # added while passwords were hashed
            vhost_admin.add(vhost)
    for u in plan.users:
        stored = hashes.get(u.name) or u.password_hash
        try:
            if stored is None:
                stored = _existing_hash(host.users, u.name)
            user_admin.put_user(u.name, stored, u.tags)
        except BrokerError as exc:
            errors.append(f"user {u.name!r}: {exc.message}")
    for user, vhost, configure, write, read in plan.permissions:
        try:
            user_admin.put_permission(user, vhost, configure, write, read)
        except BrokerError as exc:
            errors.append(f"permission of {user!r} on {vhost!r}: {exc.message}")
    for names, name, etype, durable in plan.exchanges:
        try:
            broker.declare_exchange(names.exchange_in(name), etype, durable)
        except BrokerError as exc:
            errors.append(f"exchange {name!r}: {exc.message}")
    for names, name, durable, options in plan.queues:
        try:
            broker.declare_queue(names.inn(name), durable, options)
        except BrokerError as exc:
            errors.append(f"queue {name!r}: {exc.message}")
    for names, source, destination, key in plan.bindings:
        try:
            broker.bind(names.inn(destination), names.exchange_in(source), key)
        except BrokerError as exc:
            errors.append(f"binding {source!r} -> {destination!r}: {exc.message}")
    log.info(
        "definitions imported over HTTP: %d vhost(s), %d user(s), %d permission(s), "
        "%d exchange(s), %d queue(s), %d binding(s), %d refused",
        len(plan.vhosts),
        len(plan.users),
        len(plan.permissions),
        len(plan.exchanges),
        len(plan.queues),
        len(plan.bindings),
        len(errors),
    )
    skipped = not_imported(body)
    named = summary(skipped)
    if skipped:
        log.warning("definitions import: not imported, brokerd has none: %s", named)
    await committed(broker, "definitions")
    if errors:
        return _refused(errors, applied=True)
    if skipped:
        reason = f"imported; brokerd has no equivalent for, so did not import: {named}"
        return Response.json({"not_imported": skipped, "reason": reason})
    return Response(204)


def _existing_hash(users: Users, name: str) -> str:
    user = users.get(name)
    if user is None:  # deleted while passwords were hashed
        raise not_found(f"no user {name!r}, and the document gives no password")
    return user.password_hash


def _refused(errors: list[str], *, applied: bool) -> Response:
    what = "the rest was applied" if applied else "nothing was applied"
    return Response.json({"error": "bad_request", "reason": f"{'; '.join(errors)} ({what})"}, 400)
