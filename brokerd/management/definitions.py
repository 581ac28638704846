"""RabbitMQ's definitions over HTTP: ``GET /api/definitions`` exports the
broker's topology (and, broker-wide, its vhosts, users and permissions),
``POST /api/definitions`` imports such a document.

This module only maps documents to the broker's own operations: exchanges,
queues and bindings are declared as their frames would declare them (the
core's checks apply, an existing one must match). Nothing here decides who
may ask (the API checks for an administrator first).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any, Protocol

from ..admin import listing
from ..auth.users import DEFAULT_VHOST, Users
from ..broker import Broker
from ..errors import BrokerError
from ..vhosts import Names, Registry
from .events import QUEUE as EVENTS_QUEUE
from .http import HTTPError, Response


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
            "properties_key": row["routing_key"],
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
                "hashing_algorithm": "brokerd_scrypt",
                "tags": sorted(u.tags),
            }
            for u in sorted(users.users.values(), key=lambda u: u.name)
        ]
        out["permissions"] = permission_rows(users)
    return out


async def import_definitions(host: Host, body: dict[str, Any], only: str | None) -> Response:
    """Declare the exchanges, queues and bindings of a definitions
    document, in that order, each as its declare frame would (an existing
    one must match), in the vhost each names (``only``: the path's vhost,
    for all of them). Vhosts, users and permissions are not imported
    (brokerctl does that). Every item is tried; the answer lists those
    refused (400), the others stay applied. Answers once durable."""
    broker = host.broker
    registry = host.vhosts
    errors: list[str] = []

    def items(key: str) -> list[tuple[Names, dict[str, Any]]]:
        value = body.get(key, [])
        if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
            raise HTTPError(400, f"{key} must be a list of objects")
        out = []
        for x in value:
            vhost = only if only is not None else str(x.get("vhost", DEFAULT_VHOST))
            if not registry.exists(vhost):
                errors.append(f"{key[:-1]} {x.get('name')!r}: no vhost {vhost!r}")
                continue
            out.append((Names.of(vhost), x))
        return out

    exchanges, queues, bindings = items("exchanges"), items("queues"), items("bindings")
    for names, ex in exchanges:
        try:
            broker.declare_exchange(
                names.exchange_in(str(ex.get("name", ""))),
                str(ex.get("type", "")),
                bool(ex.get("durable", True)),
            )
        except BrokerError as exc:
            errors.append(f"exchange {ex.get('name')!r}: {exc.message}")
    for names, q in queues:
        arguments = q.get("arguments") or {}
        if not isinstance(arguments, dict):
            errors.append(f"queue {q.get('name')!r}: arguments must be an object")
            continue
        options = {k: v for k, v in arguments.items() if v is not None}
        try:
            dlq = options.get("dead_letter_queue")
            if isinstance(dlq, str) and dlq:
                options["dead_letter_queue"] = names.inn(dlq)
            broker.declare_queue(
                names.inn(str(q.get("name", ""))), bool(q.get("durable", True)), options
            )
        except BrokerError as exc:
            errors.append(f"queue {q.get('name')!r}: {exc.message}")
    for names, b in bindings:
        if b.get("destination_type", "queue") != "queue":
            errors.append(f"binding to {b.get('destination')!r}: only queues are destinations")
            continue
        try:
            broker.bind(
                names.inn(str(b.get("destination", ""))),
                names.exchange_in(str(b.get("source", ""))),
                str(b.get("routing_key", "")),
            )
        except BrokerError as exc:
            errors.append(f"binding {b.get('source')!r} -> {b.get('destination')!r}: {exc.message}")
    await committed(broker, "definitions")
    if errors:
        return Response.json({"error": "bad_request", "reason": "; ".join(errors)}, 400)
    return Response(204)
