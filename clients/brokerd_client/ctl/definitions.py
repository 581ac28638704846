"""brokerctl export_definitions and import_definitions: the broker's
definitions as one JSON document, with rabbitmqctl's field names.

What travels: ``vhosts``, ``users`` (with their password hashes, never
passwords), ``permissions``, ``exchanges``, ``queues`` (their brokerd options
as ``arguments``), ``bindings``, and brokerd's own ``schedules`` (body and
props base64, the props as msgpack so headers of any type survive). Messages,
results and revocations are data, not definitions, and stay out.

Export reads the admin lists (SPEC §17.3, §17.6, §17.7) and, for the schedules,
``ScheduleList(full)`` on a connection to each vhost. Import creates what is
missing with the ordinary frames, on a connection to each vhost, so a name is
mapped into its vhost as any client's is: vhosts, then users (with their
hash) and permissions, then each vhost's exchanges, queues, bindings and
schedules. Declarations are idempotent; a user that exists already is left
as it is (its password and tags are not overwritten) and reported.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from brokerd_protocol import (
    AddUser,
    AddVhost,
    Bind,
    DeclareExchange,
    DeclareQueue,
    Frame,
    ListBindings,
    ListExchanges,
    ListPermissions,
    ListQueues,
    ListUsers,
    ListVhosts,
    ScheduleList,
    ScheduleSet,
    SetPermissions,
)
from brokerd_protocol.definitions import not_imported

from ..client import AsyncClient
from .exits import DATAERR, CtlError

PAGE = 1000
#: The vhost every broker has.
DEFAULT_VHOST = "/"

#: Opens a connection to the broker on one vhost (the caller closes it).
Connect = Callable[[str], Awaitable[AsyncClient]]


async def _pages(client: AsyncClient, make: Callable[[Any, int], Frame]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor: Any = None
    while True:
        reply = await client.call(functools.partial(_request, make, cursor))
        rows.extend(reply["items"])
        cursor = reply["next"]
        if cursor is None:
            return rows


def _request(make: Callable[[Any, int], Frame], cursor: Any, req: int) -> Frame:
    return make(cursor, req)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def export(client: AsyncClient, connect: Connect) -> dict[str, Any]:
    """Every definition of the broker ``client`` administers."""
    vhosts = [r["name"] for r in await _pages(client, lambda c, r: ListVhosts(r, c, PAGE))]
    users = await _pages(client, lambda c, r: ListUsers(r, c, PAGE, True))
    permissions = await _pages(client, lambda c, r: ListPermissions(r, None, None, c, PAGE))
    exchanges = await _pages(client, lambda c, r: ListExchanges(r, c, PAGE, None))
    queues = await _pages(client, lambda c, r: ListQueues(r, c, PAGE, None))
    bindings = await _pages(client, lambda c, r: ListBindings(r, c, PAGE, None))
    schedules: list[dict[str, Any]] = []
    for vhost in vhosts:
        on = await connect(vhost)
        try:
            rows = await on.call(lambda req: ScheduleList(req, True))
        finally:
            await on.close()
        for row in rows:
            schedules.append(
                {
                    "name": row["name"],
                    "vhost": vhost,
                    "spec": row["spec"],
                    "exchange": row["exchange"],
                    "routing_key": row["routing_key"],
                    "body_base64": _b64(row["body"]),
                    "props_msgpack_base64": _b64(msgpack.packb(row["props"], use_bin_type=True)),
                }
            )
    return {
        "vhosts": [{"name": v} for v in vhosts],
        "users": [
            {
                "name": u["name"],
                "password_hash": u["password_hash"],
                "hashing_algorithm": "brokerd_scrypt",
                "tags": u["tags"],
            }
            for u in users
        ],
        "permissions": [
            {k: p[k] for k in ("user", "vhost", "configure", "write", "read")} for p in permissions
        ],
        "exchanges": [
            {
                "name": e["name"],
                "vhost": e["vhost"],
                "type": e["type"],
                "durable": e["durable"],
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for e in exchanges
            if e["name"]  # each vhost's default exchange is not a definition
        ],
        "queues": [
            {
                "name": q["name"],
                "vhost": q["vhost"],
                "durable": q["durable"],
                "auto_delete": bool(q["options"].get("auto_delete", False)),
                "arguments": q["options"],
            }
            for q in queues
        ],
        "bindings": [
            {
                "source": b["exchange"],
                "vhost": b["vhost"],
                "destination": b["queue"],
                "destination_type": "queue",
                "routing_key": b["routing_key"],
                "arguments": {},
            }
            for b in bindings
        ],
        "schedules": schedules,
    }


def _list(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise CtlError(f"definitions: {key!r} must be a list of objects", DATAERR)
    return value


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise CtlError(f"definitions: {what} is not base64", DATAERR) from None


async def import_(client: AsyncClient, connect: Connect, data: Any) -> dict[str, Any]:
    """Create what ``data`` defines and the broker lacks; counts of each kind,
    and under ``not_imported`` what brokerd has no equivalent for (by section)."""
    if not isinstance(data, dict):
        raise CtlError("definitions: expected a JSON object", DATAERR)
    try:
        return await _import(client, connect, data)
    except (KeyError, TypeError) as exc:
        raise CtlError(
            f"definitions: a required field is missing or wrong: {exc}", DATAERR
        ) from None


async def _import(client: AsyncClient, connect: Connect, data: dict[str, Any]) -> dict[str, Any]:
    counts = dict.fromkeys(
        ("vhosts", "users", "users_kept", "permissions", "exchanges", "queues", "bindings",
         "schedules"),
        0,
    )  # fmt: skip
    existing = {r["name"] for r in await _pages(client, lambda c, r: ListVhosts(r, c, PAGE))}
    for v in _list(data, "vhosts"):
        name = str(v["name"])
        if name not in existing:
            await client.call(_make(AddVhost, name))
            existing.add(name)
            counts["vhosts"] += 1
    users = {r["name"] for r in await _pages(client, lambda c, r: ListUsers(r, c, PAGE))}
    for u in _list(data, "users"):
        name = str(u["name"])
        if name in users:
            counts["users_kept"] += 1
            continue
        tags = [str(t) for t in u.get("tags", [])]
        await client.call(_make(AddUser, name, "", tags, str(u["password_hash"])))
        counts["users"] += 1
    for p in _list(data, "permissions"):
        perm = (str(p["user"]), str(p["vhost"]), str(p["configure"]), str(p["write"]),
                str(p["read"]))  # fmt: skip
        await client.call(_make(SetPermissions, *perm))
        counts["permissions"] += 1
    by_vhost: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for kind in ("exchanges", "queues", "bindings", "schedules"):
        for item in _list(data, kind):
            vhost = str(item.get("vhost", DEFAULT_VHOST))
            by_vhost.setdefault(vhost, {}).setdefault(kind, []).append(item)
    for vhost, kinds in by_vhost.items():
        on = await connect(vhost)
        try:
            await _import_vhost(on, kinds, counts)
        finally:
            await on.close()
    skipped = not_imported(data)
    if skipped:
        return {**counts, "not_imported": skipped}
    return counts


def _make(cls: Callable[..., Frame], *fields: Any) -> Callable[[int], Frame]:
    """The request ``cls(req, *fields)`` for ``AsyncClient.call``."""
    return lambda req: cls(req, *fields)


async def _import_vhost(
    on: AsyncClient, kinds: dict[str, list[dict[str, Any]]], counts: dict[str, int]
) -> None:
    for e in kinds.get("exchanges", []):
        ex = (str(e["name"]), str(e.get("type", "direct")), bool(e.get("durable", True)))
        await on.call(_make(DeclareExchange, *ex))
        counts["exchanges"] += 1
    for q in kinds.get("queues", []):
        args = q.get("arguments") or {}
        if not isinstance(args, dict):
            raise CtlError(f"definitions: the arguments of queue {q['name']!r}", DATAERR)
        decl = (str(q["name"]), bool(q.get("durable", True)), dict(args))
        await on.call(_make(DeclareQueue, *decl))
        counts["queues"] += 1
    for b in kinds.get("bindings", []):
        if b.get("destination_type", "queue") != "queue":
            raise CtlError("definitions: brokerd binds exchanges to queues only", DATAERR)
        bind = (str(b["destination"]), str(b["source"]), str(b.get("routing_key", "")))
        await on.call(_make(Bind, *bind))
        counts["bindings"] += 1
    for s in kinds.get("schedules", []):
        body = _unb64(s.get("body_base64", ""), f"the body of schedule {s['name']!r}")
        raw = _unb64(s.get("props_msgpack_base64", ""), f"the props of schedule {s['name']!r}")
        props = msgpack.unpackb(raw, raw=False) if raw else {}
        sched = (str(s["name"]), str(s["spec"]), str(s.get("exchange", "")),
                 str(s["routing_key"]), body, props)  # fmt: skip
        await on.call(_make(ScheduleSet, *sched))
        counts["schedules"] += 1
