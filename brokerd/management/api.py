"""The management API's endpoints: RabbitMQ's paths and field names where it
has the same thing, brokerd's own beyond (redrive, schedules, tasks).

Every handler reads the loop's own state (a consistent snapshot, as the
admin list frames: the rows come from ``brokerd.admin.listing``) and answers
JSON. Changes go through the broker's own methods, into its batch, exactly
as the same frames would. Who may do what is ``auth.Gate``'s.

A vhost in a path is percent-escaped (``%2F`` is ``/``); one the broker does
not have is 404; one the user may not read is refused by ``auth.Gate``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import logging
import time
from collections.abc import Callable, Collection
from importlib import resources
from typing import Any, Protocol

from brokerd_protocol import ErrorCode

from ..admin import listing
from ..admin.vhosts import VhostAdmin
from ..auth.admin import UserAdmin
from ..auth.passwords import check_hash
from ..auth.rules import READ, WRITE
from ..auth.users import DEFAULT_VHOST, Users, check_tags, check_user_name
from ..broker import Broker
from ..config import Config
from ..diskfree import DiskMonitor
from ..errors import BrokerError
from ..flow import FlowControl
from ..queues import PRIORITIES, Connection, Consumer, Delivery, QueueState
from ..tasks.extension import TaskExtension
from ..vhosts import Names, Registry, split
from . import definitions, nodes, taskviews
from .auth import SESSION_COOKIE, SESSION_IDLE, Gate, Principal
from .events import EventWatcher
from .http import HTTPError, Request, Response
from .lists import MAX_PAGE_SIZE, int_param, projector, shape, stable_reverse_by_name
from .names import NameIndex
from .objects import Objects
from .rates import Rates
from .retry import NotRetriable, Retries, StoredMessage, UnknownTask

log = logging.getLogger("brokerd.management")

#: Messages one peek returns at most.
MAX_PEEK = 1000
#: Seconds a redrive keeps moving messages as the backlog pages in.
REDRIVE_BUDGET = 2.0
#: Seconds a publish over HTTP waits for its commit before answering 503.
PUBLISH_TIMEOUT = 30.0
#: Why an HTTP publish that timed out answers 503.
NOT_CONFIRMED = "the publish was not confirmed in time: it may or may not be stored"
#: Sent by the page's scripts (no Basic challenge for them).
PAGE_HEADER = "x-brokerd-page"
#: What POST /api/schedules/{vhost}/{name}/{action} does.
SCHEDULE_ACTIONS = ("run", "pause", "resume")
#: RabbitMQ's name of the default exchange in paths.
DEFAULT_EXCHANGE = "amq.default"
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


class StatusSource(Protocol):
    def status_map(self) -> dict[str, Any]: ...


class Host(Protocol):
    """What the management API reads of the server (``BrokerServer``)."""

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
    def disk(self) -> DiskMonitor | None: ...

    @property
    def flow(self) -> FlowControl: ...

    @property
    def user_admin(self) -> UserAdmin | None: ...

    @property
    def vhost_admin(self) -> VhostAdmin | None: ...


class _HTTPPublisher:
    """The core's ``Peer`` for publishes made over HTTP: confirms resolve futures."""

    writable = True

    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[None]] = {}

    def send_delivery(self, consumer: Consumer, delivery: Delivery) -> None:  # pragma: no cover
        raise AssertionError("the HTTP publisher never consumes")

    def send_confirms(self, routed: list[int], unroutable: list[int]) -> None:
        for seq in itertools.chain(routed, unroutable):
            fut = self.waiting.pop(seq, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    def send_publish_error(self, seq: int, code: ErrorCode, message: str) -> None:
        fut = self.waiting.pop(seq, None)
        if fut is not None and not fut.done():
            fut.set_exception(BrokerError(code, message))

    def send_consumer_cancelled(self, consumer_id: int, reason: str) -> None:  # pragma: no cover
        pass


def _broker_error(exc: BrokerError) -> HTTPError:
    if exc.code == ErrorCode.NOT_FOUND:
        return HTTPError(404, exc.message)
    if exc.code == ErrorCode.ACCESS_REFUSED:
        return HTTPError(403, exc.message)
    return HTTPError(400, exc.message)


def _object(request: Request) -> dict[str, Any]:
    return request.json_object()


def _checked(check: Callable[[Any], Any], value: Any) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise HTTPError(400, str(exc)) from None


def _tags(value: Any) -> list[str]:
    """RabbitMQ's tags: a comma-separated string or a list of strings."""
    return list(_checked(definitions.tag_list, value))


def _payload(body: bytes, encoding: str, truncate: int | None) -> tuple[str, str]:
    data = body[:truncate] if truncate is not None else body
    if encoding == "auto":
        try:
            return data.decode("utf-8"), "string"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(data).decode("ascii"), "base64"


def _json_safe(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class API:
    def __init__(
        self,
        host: Host,
        gate: Gate,
        rates: Rates,
        status: StatusSource,
        tasks: TaskExtension | None = None,
    ) -> None:
        self.host = host
        self.gate = gate
        self.rates = rates
        self.status = status
        self.tasks = tasks
        self.retries = Retries(tasks) if tasks is not None else None
        self._publisher = _HTTPPublisher()
        self._conn = Connection(self._publisher)
        self._seq = itertools.count(1)
        self.node = f"brokerd@{host.config.server_name}"
        #: One watcher of the workers' events per vhost, made on first use.
        self.watchers: dict[str, EventWatcher] = {}
        #: Single queues, exchanges and bindings: declare, delete, list.
        self.objects = Objects(host, gate, self._vhost)
        #: Every queue's name sorted, for the page's queue listing.
        self._names = NameIndex()

    # --- dispatch -----------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        try:
            segments = request.segments
        except UnicodeDecodeError:
            raise HTTPError(400, "the path is not UTF-8") from None
        self.gate.check_host(request, self.host.config.http_host)
        if request.method not in ("GET", "HEAD"):
            self.gate.check_origin(request)
        if not segments or segments[0] != "api":
            return self.static(request, segments)
        route = segments[1:]
        method = request.method
        if route == ["login"] and method == "POST":
            return await self.login(request)
        if route == ["logout"] and method == "POST":
            self.gate.logout(request)
            resp = Response(204)
            resp.headers.append(("Set-Cookie", _cookie("", 0)))
            return resp
        if route == ["openapi.json"] and method in ("GET", "HEAD"):
            from .openapi import document

            return Response.json(document())
        try:
            principal = await self.gate.principal(request)
        except HTTPError as exc:
            if exc.status == 401 and PAGE_HEADER in request.headers:
                # The page's own calls: no Basic challenge, or the browser
                # would pop its login dialog over the page's form.
                exc.headers = ()
            raise
        if method in ("GET", "HEAD"):
            return await self.get(principal, request, route)
        if method in ("POST", "PUT", "DELETE"):
            self.gate.check_csrf(principal, request)
            return await self.change(principal, request, route)
        raise HTTPError(405, f"method {method} is not allowed here")

    async def get(self, p: Principal, request: Request, route: list[str]) -> Response:
        gate = self.gate
        n = len(route)
        head = route[0] if route else ""
        if n == 1 and head == "overview":
            return Response.json(self.overview(p))
        if head == "queues" and n <= 3:
            vhost = self._vhost(p, route[1]) if n >= 2 else None
            if vhost is not None and n == 3:
                return Response.json(self.queue_json(vhost, self._queue(vhost, route[2])))
            fast = self.queue_page(p, vhost, request.query)
            if fast is not None:
                return Response.json(fast)
            return Response.json(shape(self.queues(p, vhost), request.query))
        if head == "exchanges" and n <= 3:
            vhost = self._vhost(p, route[1]) if n >= 2 else None
            rows = self.exchanges(p, vhost)
            if n < 3:
                return Response.json(shape(rows, request.query))
            if n == 3:
                name = "" if route[2] == DEFAULT_EXCHANGE else route[2]
                for row in rows:
                    if row["name"] == (DEFAULT_EXCHANGE if name == "" else name):
                        return Response.json(row)
                raise HTTPError(404, f"no exchange '{route[2]}' in vhost '{vhost}'")
            return Response.json(rows)
        if head == "bindings" and n <= 2:
            vhost = self._vhost(p, route[1]) if n == 2 else None
            return Response.json(self.bindings(p, vhost))
        if n == 1 and head == "connections":
            return Response.json(shape(self.connections(p), request.query))
        if head == "consumers" and n <= 2:
            vhost = self._vhost(p, route[1]) if n == 2 else None
            return Response.json(self.consumers(p, vhost))
        if head == "nodes" and n <= 2:
            gate.check_monitor(p)
            node = self.node_json()
            if n == 2 and route[1] != self.node:
                raise HTTPError(404, f"no node '{route[1]}' (this one is '{self.node}')")
            return Response.json(node if n == 2 else [node])
        if n == 1 and head == "channels":
            return Response.json(shape(self.channels(p), request.query))
        if head == "connections" and (n == 2 or (n == 3 and route[2] == "channels")):
            conn = self._connection(p, route[1])
            if n == 2:
                return Response.json(conn)
            name = conn["name"]
            return Response.json(
                [c for c in self.channels(p) if c["connection_details"]["name"] == name]
            )
        if n == 2 and head == "channels":
            for channel in self.channels(p):
                if channel["name"] == route[1]:
                    return Response.json(channel)
            raise HTTPError(404, f"no channel '{route[1]}'")
        if n == 3 and head == "vhosts" and route[2] in ("connections", "channels"):
            vhost = self._vhost(p, route[1])
            rows = self.connections(p) if route[2] == "connections" else self.channels(p)
            return Response.json(shape([r for r in rows if r["vhost"] == vhost], request.query))
        if n == 1 and head == "users":
            gate.check_admin(p)
            return Response.json(self.users())
        if route == ["users", "without-permissions"]:
            gate.check_admin(p)
            granted = {user for user, _ in self.host.users.permissions}
            return Response.json([u for u in self.users() if u["name"] not in granted])
        if n == 3 and head == "users" and route[2] == "permissions":
            gate.check_admin(p)
            if self.host.users.get(route[1]) is None:
                raise HTTPError(404, f"no user '{route[1]}'")
            return Response.json([r for r in self.permissions() if r["user"] == route[1]])
        if n == 3 and head == "vhosts" and route[2] == "permissions":
            gate.check_admin(p)
            if not self.host.vhosts.exists(route[1]):
                raise HTTPError(404, f"no vhost '{route[1]}'")
            return Response.json([r for r in self.permissions() if r["vhost"] == route[1]])
        if n == 2 and head == "users":
            gate.check_admin(p)
            for row in self.users():
                if row["name"] == route[1]:
                    return Response.json(row)
            raise HTTPError(404, f"no user '{route[1]}'")
        if head == "vhosts" and n <= 2:
            rows = [v for v in self.vhosts() if gate.can_read(p, v["name"])]
            if n == 2:
                for row in rows:
                    if row["name"] == route[1]:
                        return Response.json(row)
                raise HTTPError(404, f"no vhost '{route[1]}'")
            return Response.json(rows)
        if n == 1 and head == "permissions":
            gate.check_admin(p)
            return Response.json(self.permissions())
        if n == 3 and head == "permissions":
            gate.check_admin(p)
            for row in self.permissions():
                if (row["vhost"], row["user"]) == (route[1], route[2]):
                    return Response.json(row)
            raise HTTPError(404, f"user '{route[2]}' has no permissions on vhost '{route[1]}'")
        if head == "definitions" and n <= 2:
            gate.check_admin(p)
            vhost = self._vhost(p, route[1]) if n == 2 else None
            version = self.status.status_map()["version"]
            return Response.json(definitions.export(self.host, version, vhost))
        if n == 1 and head == "whoami":
            return Response.json(self.whoami(p))
        if route == ["health", "checks", "alarms"]:
            return self.alarms()
        if route == ["rates"]:
            return Response.json(self.rates.history())
        if n == 1 and head == "schedules":
            return Response.json(self.schedules(p))
        if n == 1 and head == "tasks":
            return Response.json(self.recent_tasks(p, request))
        if n == 1 and head == "workers":
            rows = []
            for watcher in self._watch(p):
                rows.extend(watcher.worker_rows())
            return Response.json(rows)
        answer = await self.objects.get(p, route)
        if answer is not None:
            return answer
        raise HTTPError(404, "no such endpoint (see /api/openapi.json)")

    async def change(self, p: Principal, request: Request, route: list[str]) -> Response:
        n = len(route)
        head = route[0] if route else ""
        method = request.method
        if head == "queues" and n == 4 and route[3] == "contents" and method == "DELETE":
            vhost = self._vhost(p, route[1])
            self.gate.check_change(p, vhost, READ, "queue", route[2])
            q = self._queue(vhost, route[2])
            self._call(self.host.broker.purge_queue, q.name)
            return Response(204)
        if head == "queues" and n == 4 and route[3] == "get" and method == "POST":
            vhost = self._vhost(p, route[1])
            self.gate.check_change(p, vhost, READ, "queue", route[2])
            return Response.json(self.peek(vhost, self._queue(vhost, route[2]), _object(request)))
        if head == "queues" and n == 4 and route[3] == "redrive" and method == "POST":
            vhost = self._vhost(p, route[1])
            return Response.json(await self.redrive(p, vhost, route[2], _object(request)))
        if head == "exchanges" and n == 4 and route[3] == "publish" and method == "POST":
            vhost = self._vhost(p, route[1])
            name = "" if route[2] == DEFAULT_EXCHANGE else route[2]
            self.gate.check_change(p, vhost, WRITE, "exchange", route[2])
            return Response.json(await self.publish(vhost, name, _object(request)))
        if head == "definitions" and n <= 2 and method == "POST":
            self.gate.check_admin(p)
            only = self._vhost(p, route[1]) if n == 2 else None
            body = _object(request)
            return await definitions.import_definitions(self.host, self._admins(), body, only)
        if head == "schedules" and n == 4 and route[3] in SCHEDULE_ACTIONS and method == "POST":
            vhost = self._vhost(p, route[1])
            self.gate.check_change(p, vhost, WRITE, "schedule", route[2])
            return Response.json(await self.schedule_action(vhost, route[2], route[3]))
        if head == "tasks" and n == 4 and route[3] == "revoke" and method == "POST":
            vhost = self._vhost(p, route[1])
            self.gate.check_change(p, vhost, WRITE, "task", route[2])
            return Response.json(await self.revoke(vhost, route[2], _object(request)))
        if head == "tasks" and n == 4 and route[3] == "retry" and method == "POST":
            vhost = self._vhost(p, route[1])
            self.gate.check_change(p, vhost, WRITE, "task", route[2])
            return Response.json(await self.retry(p, vhost, route[2]))
        answer = await self.objects.change(p, request, route)
        if answer is not None:
            return answer
        if n == 2 and head == "connections" and method == "DELETE":
            return self.close_connection(p, route[1], request.headers.get("x-reason", ""))
        if route == ["users", "bulk-delete"] and method == "POST":
            self.gate.check_admin(p)
            return await self.bulk_delete(_object(request))
        if method in ("PUT", "DELETE") and (
            (head in ("users", "vhosts") and n == 2) or (head == "permissions" and n == 3)
        ):
            self.gate.check_admin(p)
            try:
                return await self.change_access(request, route)
            except BrokerError as exc:
                raise _broker_error(exc) from None
        raise HTTPError(404 if head else 405, "no such endpoint (see /api/openapi.json)")

    # --- helpers ------------------------------------------------------------------------

    def _vhost(self, p: Principal, vhost: str) -> str:
        if not self.host.vhosts.exists(vhost):
            raise HTTPError(404, f"no vhost '{vhost}'")
        self.gate.check_read(p, vhost)
        return vhost

    @staticmethod
    def _internal(vhost: str, name: str) -> str:
        """``name`` of ``vhost`` as the core knows it (400 if it cannot be one)."""
        try:
            return Names.of(vhost).inn(name)
        except BrokerError as exc:
            raise HTTPError(400, exc.message) from None

    def _queue(self, vhost: str, name: str) -> QueueState:
        q = self.host.broker.queues.get(self._internal(vhost, name))
        if q is None:
            raise HTTPError(404, f"no queue '{name}' in vhost '{vhost}'")
        return q

    @staticmethod
    def _call(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except BrokerError as exc:
            raise _broker_error(exc) from None

    # --- reads --------------------------------------------------------------------------

    def overview(self, p: Principal) -> dict[str, Any]:
        status = self.status.status_map()
        counts = status["counts"]
        disk = self.host.disk
        return {
            "management_version": status["version"],
            "product_name": "brokerd",
            "product_version": status["version"],
            "node": self.node,
            "cluster_name": self.host.config.server_name,
            "uptime": status["uptime"],
            "object_totals": {
                "queues": counts["queues"],
                "exchanges": counts["exchanges"] + 1,
                "connections": counts["connections"],
                "channels": counts["connections"],
                "consumers": counts["consumers"],
            },
            "queue_totals": {
                "messages": counts["ready"] + counts["leased"],
                "messages_ready": counts["ready"],
                "messages_unacknowledged": counts["leased"],
                "messages_delayed": counts["delayed"],
            },
            "message_stats": self.rates.overview_stats(self.host.broker.counters),
            "listeners": status["listeners"],
            "memory": status["memory"],
            "storage": status["storage"],
            "alarms": {**status["alarms"], "store": bool(self.host.flow.store_alarm)},
            "disk_free": disk.free if disk is not None else None,
            "disk_free_limit": disk.limit if disk is not None else None,
            "user": p.name,
        }

    def _lease_ages(self, now: float) -> dict[int, float]:
        """Queue identity -> seconds its oldest outstanding delivery has been
        leased (one pass over the open deliveries)."""
        oldest: dict[int, float] = {}
        for s in self.host.sessions:
            conn = getattr(s, "conn", None)
            if conn is None:
                continue
            for d in conn.deliveries.values():
                key = id(d.queue)
                started = oldest.get(key)
                if started is None or d.started < started:
                    oldest[key] = d.started
        return {k: max(0.0, round(now - v, 3)) for k, v in oldest.items()}

    def _watch(self, p: Principal) -> list[EventWatcher]:
        """The event watchers of the vhosts ``p`` may read, attached (made on
        first use, so only a watched broker has the events queues)."""
        out = []
        registry = self.host.vhosts
        for vhost in [v for v in registry.all() if self.gate.can_read(p, v)]:
            watcher = self.watchers.get(vhost)
            if watcher is None:
                watcher = self.watchers[vhost] = EventWatcher(self.host.broker, vhost=vhost)
            watcher.watch()
            out.append(watcher)
        for gone in [v for v in self.watchers if not registry.exists(v)]:
            del self.watchers[gone]
        return out

    def _readable(self, p: Principal) -> Callable[[str], bool]:
        """Whether ``p`` may read a vhost (answers cached for one request)."""
        cache: dict[str, bool] = {}

        def readable(vhost: str) -> bool:
            verdict = cache.get(vhost)
            if verdict is None:
                verdict = cache[vhost] = self.gate.can_read(p, vhost)
            return verdict

        return readable

    def queues(self, p: Principal, vhost: str | None) -> list[dict[str, Any]]:
        broker = self.host.broker
        now = broker.clock.now()
        leases = self._lease_ages(now)
        readable = self._readable(p)
        rows = [r for r in listing.queue_rows(broker.queues, now, vhost) if readable(r[1]["vhost"])]
        rows.sort(key=lambda r: (r[1]["vhost"], r[1]["name"]))
        queues = broker.queues
        return [self._queue_row(row, queues[key], leases) for key, row in rows]

    def queue_page(
        self, p: Principal, vhost: str | None, query: dict[str, str]
    ) -> dict[str, Any] | None:
        """The page's own request, cheaply: one page sorted by name (or
        unsorted), so only that page's rows are built; the rest is a sort of
        the names. The same answer ``shape`` gives over every row (tested);
        None for any other request (``shape`` answers it)."""
        if "page" not in query or query.get("sort", "name") != "name":
            return None
        page = int_param(query, "page", 1, 1, 1 << 31)
        size = int_param(query, "page_size", 100, 1, MAX_PAGE_SIZE)
        assert page is not None and size is not None
        broker = self.host.broker
        readable = self._readable(p)
        present = self._names.vhosts(broker.queues)
        shown = {v for v in present if (vhost is None or v == vhost) and readable(v)}
        # Sorted by (name, vhost) already, and kept between requests.
        named = self._names.entries(broker.queues)
        if shown != present:
            named = [e for e in named if e[1] in shown]
        total = len(named)
        wanted = query.get("name")
        if wanted:
            named = [e for e in named if wanted in e[0]]
        if "sort" in query:
            if query.get("sort_reverse") == "true":
                # (name, vhost) pairs are unique: reversed is sorted descending;
                # then ``shape``'s stable sort keeps equal names in vhost order.
                named.reverse()
                named = stable_reverse_by_name(named)
        else:
            named.sort(key=lambda e: (e[1], e[0]))
        chosen = named[(page - 1) * size : page * size]
        now = broker.clock.now()
        leases = self._lease_ages(now)
        queues = broker.queues
        items = []
        for _, v, internal in chosen:
            (row,) = listing.queue_rows({internal: queues[internal]}, now, v)
            items.append(self._queue_row(row[1], queues[internal], leases))
        columns = [c for c in query.get("columns", "").split(",") if c]
        if columns:
            items = list(map(projector(columns), items))
        return {
            "items": items,
            "page": page,
            "page_size": size,
            "page_count": max(1, -(-len(named) // size)),
            "item_count": len(items),
            "filtered_count": len(named),
            "total_count": total,
        }

    def queue_json(self, vhost: str, q: QueueState) -> dict[str, Any]:
        broker = self.host.broker
        now = broker.clock.now()
        rows = listing.queue_rows({q.name: q}, now, vhost)
        return self._queue_row(rows[0][1], q, self._lease_ages(now))

    def _queue_row(
        self, row: dict[str, Any], q: QueueState, leases: dict[int, float]
    ) -> dict[str, Any]:
        options = dict(row["options"])
        ready = row["ready"]
        leased = row["leased"]
        return {
            "name": row["name"],
            "vhost": row["vhost"],
            "type": "classic",
            "state": "running",
            "node": self.node,
            "durable": row["durable"],
            "auto_delete": bool(options.get("auto_delete")),
            "exclusive": False,
            "arguments": options,
            "messages_ready": ready,
            "messages_unacknowledged": leased,
            "messages": ready + leased,
            "messages_delayed": row["delayed"],
            "consumers": row["consumers"],
            "oldest_ready_age": row["oldest_ready_age"],
            "oldest_lease_age": leases.get(id(q)),
            "dead_letter_queue": options.get("dead_letter_queue"),
            "message_stats": self.rates.queue_stats(q),
        }

    def exchanges(self, p: Principal, vhost: str | None) -> list[dict[str, Any]]:
        readable = self._readable(p)
        rows = listing.exchange_rows(self.host.broker.exchanges, vhost, self.host.vhosts.all())
        rows.sort(key=lambda r: (r[1]["vhost"], r[1]["name"]))
        return [
            {
                "name": row["name"] or DEFAULT_EXCHANGE,
                "vhost": row["vhost"],
                "type": row["type"],
                "durable": row["durable"],
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for _, row in rows
            if readable(row["vhost"])
        ]

    def bindings(self, p: Principal, vhost: str | None) -> list[dict[str, Any]]:
        readable = self._readable(p)
        rows = definitions.binding_rows(self.host.broker, vhost)
        return [b for b in rows if readable(b["vhost"])]

    def _sessions(self, p: Principal, vhost: str | None = None) -> list[dict[str, Any]]:
        rows = listing.connection_rows(self.host.sessions, _conn, vhost)
        rows.sort(key=lambda r: r[0])
        visible = p.is_admin or "monitoring" in p.tags
        return [row for _, row in rows if visible or row["user"] == p.name]

    def connections(self, p: Principal) -> list[dict[str, Any]]:
        out = []
        for row in self._sessions(p):
            peer_host, _, peer_port = str(row["peer"]).rpartition(":")
            out.append(
                {
                    "name": f"{row['peer']} ({row['id']})",
                    "id": row["id"],
                    "node": self.node,
                    "vhost": row["vhost"],
                    "user": row["user"] or "",
                    "protocol": "brokerd",
                    "type": "network" if row["transport"] == "tcp" else "direct",
                    "peer_host": peer_host or row["peer"],
                    "peer_port": int(peer_port) if peer_port.isdigit() else None,
                    "client_properties": {"connection_name": row["client_name"]},
                    "connected_at": int(row["connected_at"] * 1000),
                    "recv_oct": row["bytes_in"],
                    "send_oct": row["bytes_out"],
                    "channels": 1,
                    "consumers": row["consumers"],
                    "unsettled": row["unsettled"],
                    "unsettled_bytes": row["unsettled_bytes"],
                    "state": "running",
                }
            )
        return out

    def _connection(self, p: Principal, name: str) -> dict[str, Any]:
        """The connection listed as ``name`` (404 also when ``p`` may not see it)."""
        for row in self.connections(p):
            if row["name"] == name:
                return row
        raise HTTPError(404, f"no connection '{name}'")

    def close_connection(self, p: Principal, name: str, reason: str) -> Response:
        """RabbitMQ's ``DELETE /api/connections/{name}``: an administrator
        closes any connection, another user only its own; the peer gets
        ``Close`` with the ``X-Reason`` header's text."""
        row = self._connection(p, name)
        if not p.is_admin and row["user"] != p.name:
            raise HTTPError(403, "only an administrator closes another user's connection")
        # Listed a moment ago, with no await since: it is still there.
        session = next(s for s in self.host.sessions if getattr(s, "id", None) == row["id"])
        text = reason[:200] or f"closed through the management API by '{p.name}'"
        log.info("connection %s closed over HTTP by %r", name, p.name)
        session.close_by_admin(text)
        return Response(204)

    def channels(self, p: Principal) -> list[dict[str, Any]]:
        """RabbitMQ's channels: brokerd has one per connection, so each
        connection the requester may see is one channel, number 1. Its
        ``prefetch_count`` is the largest of its consumers' (brokerd's
        prefetch is per consumer; 0 without consumers)."""
        prefetch: dict[int, int] = {}
        for _, row in listing.consumer_rows(self.host.sessions, _conn):
            conn_id = row["connection"]
            prefetch[conn_id] = max(prefetch.get(conn_id, 0), row["prefetch"])
        return [
            {
                "name": f"{conn['name']} (1)",
                "number": 1,
                "node": self.node,
                "vhost": conn["vhost"],
                "user": conn["user"],
                "connection_details": {
                    "name": conn["name"],
                    "peer_host": conn["peer_host"],
                    "peer_port": conn["peer_port"],
                },
                "consumer_count": conn["consumers"],
                "prefetch_count": prefetch.get(conn["id"], 0),
                "global_prefetch_count": 0,
                "messages_unacknowledged": conn["unsettled"],
                "messages_unconfirmed": 0,
                "messages_uncommitted": 0,
                "acks_uncommitted": 0,
                "confirm": True,
                "transactional": False,
                "state": "running",
            }
            for conn in self.connections(p)
        ]

    def consumers(self, p: Principal, vhost: str | None) -> list[dict[str, Any]]:
        visible = {row["id"]: row for row in self._sessions(p, vhost)}
        rows = listing.consumer_rows(self.host.sessions, _conn, vhost)
        rows.sort(key=lambda r: tuple(r[0]))
        out = []
        for _, row in rows:
            conn = visible.get(row["connection"])
            if conn is None:
                continue
            out.append(
                {
                    "consumer_tag": str(row["consumer"]),
                    "queue": {"name": row["queue"], "vhost": row["vhost"]},
                    "channel_details": {
                        "connection_name": f"{conn['peer']} ({conn['id']})",
                        "peer_host": conn["peer"],
                        "user": conn["user"] or "",
                        "node": self.node,
                    },
                    "ack_required": True,
                    "active": True,
                    "prefetch_count": row["prefetch"],
                    "unsettled": row["unsettled"],
                    "lease": row["lease"],
                    "arguments": {},
                }
            )
        return out

    def users(self) -> list[dict[str, Any]]:
        return [
            {"name": u.name, "tags": sorted(u.tags), "hashing_algorithm": "scrypt"}
            for u in sorted(self.host.users.users.values(), key=lambda u: u.name)
        ]

    def vhosts(self) -> list[dict[str, Any]]:
        counts = {v: [0, 0] for v in self.host.vhosts.all()}
        for internal, q in self.host.broker.queues.items():
            c = counts.get(split(internal)[0])
            if c is not None:
                c[0] += q.ready_count
                c[1] += q.leased
        return [
            {
                "name": v,
                "description": "the default vhost" if v == DEFAULT_VHOST else "",
                "tracing": False,
                "messages": ready + leased,
                "messages_ready": ready,
                "messages_unacknowledged": leased,
            }
            for v, (ready, leased) in counts.items()
        ]

    def permissions(self) -> list[dict[str, Any]]:
        return definitions.permission_rows(self.host.users)

    def node_json(self) -> dict[str, Any]:
        host = self.host
        return nodes.node_row(
            self.node,
            self.status.status_map(),
            broker=host.broker,
            config=host.config,
            disk=host.disk,
            flow=host.flow,
            sockets=sum(1 for s in host.sessions if not getattr(s, "local", False)),
        )

    def whoami(self, p: Principal) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": p.name,
            "tags": sorted(p.tags),
            "open": self.gate.open,
            "can_change": p.is_admin or "management" in p.tags,
        }
        if p.via_cookie:
            out["csrf_token"] = p.csrf
        return out

    def alarms(self) -> Response:
        status = self.status.status_map()
        alarms = [name for name, on in status["alarms"].items() if on]
        if self.host.flow.store_alarm:
            alarms.append("store")
        if alarms:
            return Response.json(
                {
                    "status": "failed",
                    "reason": f"resource alarm(s) in effect: {', '.join(alarms)}",
                    "alarms": alarms,
                },
                503,
            )
        return Response.json({"status": "ok"})

    def schedules(self, p: Principal) -> list[dict[str, Any]]:
        if self.tasks is None:
            return []
        readable = self._readable(p)
        out = []
        for row in taskviews.schedules(self.tasks):
            vhost, name = split(row["name"])
            if readable(vhost):
                names = Names.of(vhost)
                exchange, key = names.route_out(row["exchange"], row["routing_key"])
                out.append(
                    {**row, "vhost": vhost, "name": name, "exchange": exchange, "routing_key": key}
                )
        return out

    def recent_tasks(self, p: Principal, request: Request) -> list[dict[str, Any]]:
        """Tasks from the workers' events (most recently changed first), then
        final results from the results store's memory not seen in events."""
        limit = int_param(dict(request.query), "limit", 100, 1, 1000)
        assert limit is not None
        readable = self._readable(p)
        rows: list[dict[str, Any]] = []
        for watcher in self._watch(p):
            rows.extend(watcher.task_rows(limit))
        rows.sort(key=lambda row: row.get("timestamp", 0), reverse=True)
        del rows[limit:]
        for row in rows:
            row["task_id"] = row["uuid"]
        if self.tasks is not None and len(rows) < limit:
            seen = {Names.of(row["vhost"]).inn(row["task_id"]) for row in rows}

            def keep(internal: str) -> bool:
                return internal not in seen and readable(split(internal)[0])

            for row in taskviews.recent(self.tasks, limit - len(rows), keep):
                vhost, task_id = split(row["task_id"])
                rows.append({**row, "task_id": task_id, "vhost": vhost})
        return rows

    # --- changes ------------------------------------------------------------------------

    async def _committed(self, what: str) -> None:
        await definitions.committed(self.host.broker, what)

    def _admins(self) -> tuple[UserAdmin, VhostAdmin]:
        users, vhosts = self.host.user_admin, self.host.vhost_admin
        if users is None or vhosts is None:
            raise HTTPError(501, "this broker was built without the user and vhost admin")
        return users, vhosts

    async def change_access(self, request: Request, route: list[str]) -> Response:
        """PUT and DELETE of users, permissions and vhosts (administrators only,
        checked by the caller), as the admin frames do them (``UserAdmin``,
        ``VhostAdmin``). Answers once durable: 201 for a creation, else 204."""
        user_admin, vhost_admin = self._admins()
        users = self.host.users
        head, method = route[0], request.method
        if head == "users" and method == "PUT":
            return await self.put_user(user_admin, route[1], _object(request))
        if head == "users":
            user_admin.remove_user(route[1])
            log.info("user %r deleted over HTTP", route[1])
            await self._committed("deletion")
            return Response(204)
        if head == "permissions":
            vhost, user = route[1], route[2]
            if not self.host.vhosts.exists(vhost):
                raise HTTPError(404, f"no vhost '{vhost}'")
            if method == "DELETE":
                user_admin.remove_permission(user, vhost)
                await self._committed("permissions")
                return Response(204)
            body = _object(request)
            configure, write, read = (body.get(k) for k in ("configure", "write", "read"))
            if not (
                isinstance(configure, str) and isinstance(write, str) and isinstance(read, str)
            ):
                raise HTTPError(400, "configure, write and read must all be given, as strings")
            existed = users.permission(user, vhost) is not None
            user_admin.put_permission(user, vhost, configure, write, read)
            await self._committed("permissions")
            return Response(204 if existed else 201)
        name = route[1]
        if method == "DELETE":
            vhost_admin.remove(name)
            log.info("vhost %r deleted over HTTP", name)
            await self._committed("deletion")
            return Response(204)
        if self.host.vhosts.exists(name):
            return Response(204)  # idempotent, as RabbitMQ's
        vhost_admin.add(name)
        log.info("vhost %r added over HTTP", name)
        await self._committed("vhost")
        return Response(201)

    async def bulk_delete(self, body: dict[str, Any]) -> Response:
        """RabbitMQ's ``POST /api/users/bulk-delete`` ``{"users": [...]}``:
        delete each named user that exists (unknown names are skipped, as
        RabbitMQ's), with its permissions and connections; 204 once stored."""
        names = body.get("users")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise HTTPError(400, "users must be a list of user names")
        user_admin, _ = self._admins()
        deleted = [name for name in dict.fromkeys(names) if self.host.users.get(name) is not None]
        for name in deleted:
            user_admin.remove_user(name)
        if deleted:
            log.info("users %s deleted over HTTP", ", ".join(map(repr, deleted)))
            await self._committed("deletion")
        return Response(204)

    async def put_user(self, admin: UserAdmin, name: str, body: dict[str, Any]) -> Response:
        """Create or update ``name``: ``password`` (hashed off the loop) or
        ``password_hash`` (as exported), ``tags``. An update without either
        keeps the password, without ``tags`` keeps the tags."""
        _checked(check_user_name, name)
        password, password_hash = body.get("password"), body.get("password_hash")
        if not all(x is None or isinstance(x, str) for x in (password, password_hash)):
            raise HTTPError(400, "password and password_hash must be strings")
        if password is not None and password_hash is not None:
            raise HTTPError(400, "give a password or a password_hash, not both")
        tags = _checked(check_tags, _tags(body["tags"])) if "tags" in body else None
        if password is not None:
            stored = await admin.hash_password(password)
        elif password_hash is not None:
            stored = _checked(check_hash, password_hash)
        else:
            existing = self.host.users.get(name)
            if existing is None:
                raise HTTPError(400, "a new user needs a password or a password_hash")
            stored = existing.password_hash
        current = self.host.users.get(name)  # as it is now, after the hashing
        if tags is None:
            tags = current.tags if current is not None else frozenset()
        admin.put_user(name, stored, tags)
        log.info("user %r %s over HTTP", name, "added" if current is None else "updated")
        await self._committed("user")
        return Response(201 if current is None else 204)

    def peek(self, vhost: str, q: QueueState, body: dict[str, Any]) -> list[dict[str, Any]]:
        """RabbitMQ's "get messages", as a peek: the first ``count`` ready
        messages in delivery order, left in the queue (only the
        ``*_requeue_true`` ackmodes: consuming over HTTP is not offered)."""
        count = int_param(body, "count", 1, 1, MAX_PEEK)
        assert count is not None
        ackmode = body.get("ackmode", "ack_requeue_true")
        if ackmode not in ("ack_requeue_true", "reject_requeue_true"):
            raise HTTPError(
                400,
                "ackmode must be ack_requeue_true or reject_requeue_true: a get over HTTP "
                "peeks and never removes messages",
            )
        encoding = body.get("encoding", "auto")
        if encoding not in ("auto", "base64"):
            raise HTTPError(400, "encoding must be auto or base64")
        truncate = int_param(body, "truncate", None, 0, 1 << 30)
        names = Names.of(vhost)
        out: list[dict[str, Any]] = []
        remaining = q.ready_count
        for prio in PRIORITIES:
            for m in q.ready[prio]:
                if len(out) >= count:
                    break
                payload, used = _payload(m.body, encoding, truncate)
                remaining -= 1
                exchange, key = names.route_out(m.exchange, m.routing_key)
                headers = dict(m.headers or {})
                dead = headers.get("x-death-queue")
                if isinstance(dead, str):
                    headers["x-death-queue"] = names.out(dead)
                out.append(
                    {
                        "payload_bytes": len(m.body),
                        "redelivered": m.attempts > 0,
                        "exchange": exchange,
                        "routing_key": key,
                        "message_count": max(0, remaining),
                        "properties": {
                            "headers": _json_safe(headers),
                            "message_id": m.message_id,
                            "priority": m.priority,
                            "timestamp": m.timestamp // 1000,
                        },
                        "payload": payload,
                        "payload_encoding": used,
                        "attempts": m.attempts,
                    }
                )
        return out

    async def publish(self, vhost: str, exchange: str, body: dict[str, Any]) -> dict[str, Any]:
        key = body.get("routing_key", "")
        payload = body.get("payload", "")
        encoding = body.get("payload_encoding", "string")
        props = body.get("properties", {}) or {}
        if not isinstance(key, str) or not isinstance(payload, str):
            raise HTTPError(400, "routing_key and payload must be strings")
        if not isinstance(props, dict):
            raise HTTPError(400, "properties must be an object")
        if encoding == "string":
            data = payload.encode("utf-8")
        elif encoding == "base64":
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise HTTPError(400, "payload is not valid base64") from None
        else:
            raise HTTPError(400, "payload_encoding must be string or base64")
        raw: dict[str, Any] = {}
        for name in ("headers", "priority", "message_id", "delay", "ttl"):
            if props.get(name) is not None:
                raw[name] = props[name]
        if "expiration" in props and props["expiration"] not in (None, ""):
            # RabbitMQ's per-message TTL: milliseconds, as a string.
            try:
                raw["ttl"] = int(str(props["expiration"])) / 1000
            except ValueError:
                raise HTTPError(400, "expiration must be milliseconds") from None
        self._check_held()
        try:
            exchange, key = Names.of(vhost).route_in(exchange, key)
        except BrokerError as exc:
            raise HTTPError(400, exc.message) from None
        routed = bool(self._call(self.host.broker.route, exchange, key))
        fut = self._start_publish(exchange, key, data, raw)
        try:
            await asyncio.wait_for(fut, PUBLISH_TIMEOUT)
        except BrokerError as exc:
            raise HTTPError(503, exc.message) from None
        except TimeoutError:
            raise HTTPError(503, NOT_CONFIRMED) from None
        return {"routed": routed}

    def _check_held(self) -> None:
        host = self.host
        if host.flow.store_alarm or (host.disk is not None and host.disk.alarm):
            raise HTTPError(503, "publishers are held (a disk or database alarm): try later")

    def _start_publish(
        self, exchange: str, key: str, data: bytes, raw: dict[str, Any]
    ) -> asyncio.Future[None]:
        """Publish (internal names) as a confirming publisher; the future
        resolves once it is durable (or fails). HTTPError if refused at once."""
        seq = next(self._seq)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._publisher.waiting
        waiting[seq] = fut
        fut.add_done_callback(lambda _: waiting.pop(seq, None))
        try:
            self.host.broker.publish(self._conn, seq, exchange, key, data, raw)
        except BrokerError as exc:
            waiting.pop(seq, None)
            raise _broker_error(exc) from None
        return fut

    async def redrive(
        self, p: Principal, vhost: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        q = self._queue(vhost, name)
        count = int_param(body, "count", None, 1, 1 << 40)
        to = body.get("to")
        if to is not None and (not isinstance(to, str) or not to):
            raise HTTPError(400, "to must be a queue name")
        self.gate.check_change(p, vhost, READ, "queue", name)
        target: str | None = None
        if to is not None:
            target = self._queue(vhost, to).name
            self.gate.check_change(p, vhost, WRITE, "queue", to)
        elif not p.is_admin:
            # Sources come from each message's header: check every one moved.
            for source in self._sources(q):
                self.gate.check_change(p, vhost, WRITE, "queue", split(source)[1])
        broker = self.host.broker
        moved = 0
        deadline = time.monotonic() + REDRIVE_BUDGET
        while True:
            left = None if count is None else count - moved
            step = self._call(broker.redrive, q.name, left, target)
            moved += step
            if count is not None and moved >= count:
                break
            if q.deleted or q.ready_count == 0 or time.monotonic() > deadline:
                break
            if step == 0 and q.mem:
                break  # what is left has nowhere to go
            await asyncio.sleep(0.02)  # the next page loads
        return {"moved": moved, "remaining": q.ready_count}

    @staticmethod
    def _sources(q: QueueState) -> set[str]:
        out: set[str] = set()
        for dq in q.ready:
            for m in dq:
                source = m.headers.get("x-death-queue") if m.headers else None
                if isinstance(source, str):
                    out.add(source)
        return out

    async def schedule_action(self, vhost: str, name: str, action: str) -> dict[str, Any]:
        """Run a schedule now, or pause or resume it; answers once stored."""
        if self.tasks is None:
            raise HTTPError(404, "the task layer is not installed")
        schedules = self.tasks.schedules
        act = {"run": schedules.run_now, "pause": schedules.pause, "resume": schedules.resume}
        try:
            act[action](self._internal(vhost, name))
        except BrokerError as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                raise HTTPError(404, f"no schedule '{name}' in vhost '{vhost}'") from None
            raise _broker_error(exc) from None
        try:
            await taskviews.committed(self.tasks)
        except RuntimeError as exc:
            raise HTTPError(503, str(exc)) from None
        return {"schedule": name, "done": action}

    async def revoke(self, vhost: str, task_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.tasks is None:
            raise HTTPError(404, "the task layer is not installed")
        terminate = body.get("terminate", False)
        ttl = body.get("ttl", 86_400.0)
        if not isinstance(terminate, bool):
            raise HTTPError(400, "terminate must be a boolean")
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            raise HTTPError(400, "ttl must be a number of seconds")
        try:
            internal = self._internal(vhost, task_id)
            await taskviews.revoke(self.tasks, internal, terminate, float(ttl))
        except BrokerError as exc:
            raise _broker_error(exc) from None
        return {"revoked": task_id}

    async def retry(self, p: Principal, vhost: str, task_id: str) -> dict[str, Any]:
        """Send a failed task's stored message again under its id (see ``retry``)."""
        if self.retries is None:
            raise HTTPError(404, "the task layer is not installed")
        internal = self._internal(vhost, task_id)
        self._check_held()
        names = Names.of(vhost)

        def send(message: StoredMessage) -> asyncio.Future[None]:
            # As a publisher on the broker port: write on the exchange.
            shown = message.exchange or DEFAULT_EXCHANGE
            self.gate.check_change(p, vhost, WRITE, "exchange", shown)
            try:
                exchange, key = names.route_in(message.exchange, message.routing_key)
                targets = self.host.broker.route(exchange, key)
            except BrokerError as exc:
                raise NotRetriable(f"its message cannot be routed now: {exc.message}") from None
            if not targets:
                raise NotRetriable(
                    f"its message (exchange '{shown}', routing key '{message.routing_key}') "
                    "routes to no queue now"
                )
            return self._start_publish(exchange, key, message.body, message.props(task_id))

        try:
            sent = await self.retries.retry(internal, send, PUBLISH_TIMEOUT)
        except UnknownTask as exc:
            raise HTTPError(404, f"task '{task_id}' in vhost '{vhost}': {exc}") from None
        except NotRetriable as exc:
            raise HTTPError(409, f"task '{task_id}' cannot be retried: {exc}") from None
        except BrokerError as exc:
            raise HTTPError(503, exc.message) from None
        except TimeoutError:
            raise HTTPError(503, NOT_CONFIRMED) from None
        except RuntimeError as exc:
            raise HTTPError(503, str(exc)) from None
        exchange = sent.exchange or DEFAULT_EXCHANGE
        return {"retried": task_id, "exchange": exchange, "routing_key": sent.routing_key}

    # --- page and login -----------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        body = _object(request)
        name = body.get("username")
        password = body.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            raise HTTPError(400, "username and password must be strings")
        if self.gate.open:
            return Response.json({"name": "", "tags": ["administrator"], "open": True})
        token, session = await self.gate.login(name, password, request.peer_host)
        resp = Response.json({"name": session.user, "csrf_token": session.csrf})
        resp.headers.append(("Set-Cookie", _cookie(token, int(SESSION_IDLE))))
        return resp

    def static(self, request: Request, segments: list[str]) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise HTTPError(405, "the page is read with GET")
        name = "/".join(segments) or "index.html"
        if name not in _static_names():
            raise HTTPError(404, "not found")
        data = resources.files(__package__).joinpath("static", name).read_bytes()
        suffix = name[name.rfind(".") :]
        return Response(200, data, STATIC_TYPES.get(suffix, "application/octet-stream"))


_STATIC: frozenset[str] | None = None


def _static_names() -> frozenset[str]:
    """The page's files (a fixed list read once: no path from a request is
    ever joined onto the file system)."""
    global _STATIC
    if _STATIC is None:
        root = resources.files(__package__).joinpath("static")
        _STATIC = frozenset(
            f.name for f in root.iterdir() if f.is_file() and not f.name.startswith(".")
        )
    return _STATIC


def _conn(session: Any) -> Connection:
    conn: Connection = session.conn
    return conn


def _cookie(token: str, max_age: int) -> str:
    return f"{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
