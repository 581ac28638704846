"""Single queues, exchanges and bindings over HTTP, as RabbitMQ's
management API declares and deletes them (rabbitmqadmin, Terraform's
rabbitmq provider, curl scripts):

* ``PUT``/``DELETE /api/queues/{vhost}/{name}``, ``PUT``/``DELETE
  /api/exchanges/{vhost}/{name}``;
* ``GET``/``POST /api/bindings/{vhost}/e/{exchange}/q/{queue}``,
  ``GET``/``DELETE .../{props}``;
* ``GET /api/queues/{vhost}/{name}/bindings``, ``GET
  /api/exchanges/{vhost}/{name}/bindings/source|destination``.

Each change is what its frame does on the broker port: the same broker
method (an existing queue or exchange must match: 204, else 400 as the
frame's PRECONDITION_FAILED), and the same access rule (``Gate.check_frame``
applies the frame's row of ``auth/rules.py``). A change answers once its
batch is committed. Bodies are read by ``declarations.py``, shared with the
definitions import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import brokerd_protocol as bp
from brokerd_protocol import ErrorCode

from ..errors import BrokerError
from ..vhosts import Names, split
from . import declarations, definitions
from .auth import Gate, Principal
from .http import HTTPError, Request, Response

#: RabbitMQ's name of the default exchange in paths.
DEFAULT_EXCHANGE = "amq.default"
#: A query flag's true value (RabbitMQ's ``if-empty=true``).
TRUE = "true"


def _refused(exc: BrokerError, names: Names) -> HTTPError:
    """The frame's error as HTTP, its internal names shown as the client's."""
    message = names.text_out(exc.message)
    if exc.code == ErrorCode.NOT_FOUND:
        return HTTPError(404, message)
    if exc.code == ErrorCode.ACCESS_REFUSED:
        return HTTPError(403, message)
    return HTTPError(400, message)


def _bad(check: Callable[[], Any]) -> Any:
    try:
        return check()
    except ValueError as exc:
        raise HTTPError(400, str(exc)) from None


def _internal(names: Names, name: str) -> str:
    try:
        return names.inn(name)
    except BrokerError as exc:
        raise HTTPError(400, exc.message) from None


class Objects:
    """The endpoints above; ``vhost(p, name)`` is the API's check that the
    vhost exists (404) and ``p`` may read it (403)."""

    def __init__(self, host: definitions.Host, gate: Gate, vhost: Callable[[Principal, str], str]):
        self.host = host
        self.gate = gate
        self.vhost = vhost

    # --- dispatch -------------------------------------------------------------------------

    async def get(self, p: Principal, route: list[str]) -> Response | None:
        """Answer a read this module owns, or None."""
        n = len(route)
        head = route[0] if route else ""
        if head == "queues" and n == 4 and route[3] == "bindings":
            vhost = self.vhost(p, route[1])
            return Response.json(self.queue_bindings(vhost, route[2]))
        if head == "exchanges" and n == 5 and route[3] == "bindings":
            vhost = self.vhost(p, route[1])
            if route[4] == "source":
                return Response.json(self.source_bindings(vhost, route[2]))
            if route[4] == "destination":
                self._exchange(vhost, route[2])
                return Response.json([])  # brokerd binds no exchange to an exchange
            return None
        if head == "bindings" and n in (6, 7):
            vhost = self.vhost(p, route[1])
            exchange, queue = self._pair(vhost, route)
            rows = self.between(vhost, exchange, queue)
            if n == 6:
                return Response.json(rows)
            key = _bad(lambda: declarations.routing_key_of(route[6]))
            for row in rows:
                if row["routing_key"] == key:
                    return Response.json(row)
            raise HTTPError(404, f"no binding of queue '{queue}' to '{exchange}' with key {key!r}")
        return None

    async def change(self, p: Principal, request: Request, route: list[str]) -> Response | None:
        """Answer a change this module owns, or None."""
        n = len(route)
        head = route[0] if route else ""
        method = request.method
        if head == "queues" and n == 3 and method == "PUT":
            return await self.put_queue(p, self.vhost(p, route[1]), route[2], request)
        if head == "queues" and n == 3 and method == "DELETE":
            return await self.delete_queue(p, self.vhost(p, route[1]), route[2], request.query)
        if head == "exchanges" and n == 3 and method == "PUT":
            return await self.put_exchange(p, self.vhost(p, route[1]), route[2], request)
        if head == "exchanges" and n == 3 and method == "DELETE":
            return await self.delete_exchange(p, self.vhost(p, route[1]), route[2], request.query)
        if head == "bindings" and n == 6 and method == "POST":
            return await self.bind(p, self.vhost(p, route[1]), route, request)
        if head == "bindings" and n == 7 and method == "DELETE":
            return await self.unbind(p, self.vhost(p, route[1]), route)
        return None

    # --- the broker call behind each change ----------------------------------------------

    async def _declared(
        self, existed: bool, declare: Callable[[], None], names: Names, what: str
    ) -> Response:
        """Run a declare: 204 if the object existed (with these settings: a
        clash raises), else 201 once the store has committed it."""
        try:
            declare()
        except BrokerError as exc:
            raise _refused(exc, names) from None
        if existed:
            return Response(204)
        await definitions.committed(self.host.broker, what)
        return Response(201)

    async def _deleted(
        self, delete: Callable[[], object], names: Names, what: str = "deletion"
    ) -> Response:
        """Run a delete (or an unbind): 204 once the store has committed it."""
        try:
            delete()
        except BrokerError as exc:
            raise _refused(exc, names) from None
        await definitions.committed(self.host.broker, what)
        return Response(204)

    # --- queues ---------------------------------------------------------------------------

    async def put_queue(self, p: Principal, vhost: str, name: str, request: Request) -> Response:
        """Declare a queue: 201 made, 204 it exists with these settings, 400
        it exists with others (nothing changes)."""
        names = Names.of(vhost)
        internal = _internal(names, name)
        # The frame's rule, on the client's name as on the broker port (its
        # resource is the name only: checked before the body is read).
        self.gate.check_frame(p, vhost, bp.DeclareQueue(0, name))
        body = request.json_object()
        durable, options = _bad(lambda: declarations.queue_settings(body, names))
        broker = self.host.broker
        existed = internal in broker.queues
        return await self._declared(
            existed, lambda: broker.declare_queue(internal, durable, options), names, "queue"
        )

    async def delete_queue(
        self, p: Principal, vhost: str, name: str, query: dict[str, str]
    ) -> Response:
        """Delete a queue with its messages; ``if-empty=true`` refuses (400)
        while it holds any (ready, leased or delayed), ``if-unused=true``
        while it has consumers."""
        names = Names.of(vhost)
        self.gate.check_frame(p, vhost, bp.DeleteQueue(0, name))
        q = self.host.broker.queues.get(_internal(names, name))
        if q is None:
            raise HTTPError(404, f"no queue '{name}' in vhost '{vhost}'")
        stats = q.stats()
        if query.get("if-empty") == TRUE:
            held = stats["ready"] + stats["leased"] + stats["delayed"] + len(q.arriving)
            if held:
                raise HTTPError(400, f"queue '{name}' in vhost '{vhost}' is not empty ({held})")
        if query.get("if-unused") == TRUE and stats["consumers"]:
            users = stats["consumers"]
            raise HTTPError(400, f"queue '{name}' in vhost '{vhost}' has {users} consumer(s)")
        return await self._deleted(lambda: self.host.broker.delete_queue(q.name), names)

    # --- exchanges ------------------------------------------------------------------------

    async def put_exchange(self, p: Principal, vhost: str, name: str, request: Request) -> Response:
        if name in (DEFAULT_EXCHANGE, ""):
            raise HTTPError(400, "the default exchange always exists and cannot be declared")
        names = Names.of(vhost)
        internal = _internal(names, name)
        self.gate.check_frame(p, vhost, bp.DeclareExchange(0, name))
        body = request.json_object()
        etype, durable = _bad(lambda: declarations.exchange_settings(body))
        broker = self.host.broker
        existed = internal in broker.exchanges
        return await self._declared(
            existed, lambda: broker.declare_exchange(internal, etype, durable), names, "exchange"
        )

    async def delete_exchange(
        self, p: Principal, vhost: str, name: str, query: dict[str, str]
    ) -> Response:
        """Delete an exchange (its bindings go with it); ``if-unused=true``
        refuses (400) while a queue is bound to it."""
        if name in (DEFAULT_EXCHANGE, ""):
            raise HTTPError(400, "the default exchange cannot be deleted")
        names = Names.of(vhost)
        self.gate.check_frame(p, vhost, bp.DeleteExchange(0, name))
        ex = self.host.broker.exchanges.get(_internal(names, name))
        if ex is None:
            raise HTTPError(404, f"no exchange '{name}' in vhost '{vhost}'")
        if query.get("if-unused") == TRUE and ex.router.bindings():
            raise HTTPError(400, f"exchange '{name}' in vhost '{vhost}' is in use (bound)")
        return await self._deleted(lambda: self.host.broker.delete_exchange(ex.name), names)

    # --- bindings -------------------------------------------------------------------------

    def _pair(self, vhost: str, route: list[str]) -> tuple[str, str]:
        """(exchange, queue) of ``/api/bindings/{vhost}/e/{exchange}/q/{queue}``,
        both existing (404 otherwise)."""
        if route[2] != "e" or route[4] not in ("q", "e"):
            raise HTTPError(404, "no such endpoint (see /api/openapi.json)")
        if route[4] == "e":
            raise HTTPError(400, "brokerd binds queues to exchanges, not exchanges to exchanges")
        exchange, queue = route[3], route[5]
        if exchange in (DEFAULT_EXCHANGE, ""):
            raise HTTPError(
                400, "every queue is bound to the default exchange by its name, implicitly"
            )
        self._exchange(vhost, exchange)
        if _internal(Names.of(vhost), queue) not in self.host.broker.queues:
            raise HTTPError(404, f"no queue '{queue}' in vhost '{vhost}'")
        return exchange, queue

    def _exchange(self, vhost: str, name: str) -> None:
        if name == DEFAULT_EXCHANGE:
            return
        if _internal(Names.of(vhost), name) not in self.host.broker.exchanges:
            raise HTTPError(404, f"no exchange '{name}' in vhost '{vhost}'")

    async def bind(self, p: Principal, vhost: str, route: list[str], request: Request) -> Response:
        """Bind a queue to an exchange with a routing key: 201 (also when the
        binding exists, as RabbitMQ), ``Location`` naming it."""
        exchange, queue = self._pair(vhost, route)
        body = request.json_object()
        key = body.get("routing_key", "")
        if not isinstance(key, str):
            raise HTTPError(400, "routing_key must be a string")
        _bad(lambda: declarations.binding_arguments(body))
        self.gate.check_frame(p, vhost, bp.Bind(0, queue, exchange, key))
        names = Names.of(vhost)
        broker = self.host.broker
        try:
            broker.bind(names.inn(queue), names.exchange_in(exchange), key)
        except BrokerError as exc:
            raise _refused(exc, names) from None
        await definitions.committed(broker, "binding")
        resp = Response(201)
        location = "/".join(
            quote(part, safe="")
            for part in ("", "api", "bindings", vhost, "e", exchange, "q", queue)
        )
        props = quote(declarations.properties_key(key), safe="")
        resp.headers.append(("Location", f"{location}/{props}"))
        return resp

    async def unbind(self, p: Principal, vhost: str, route: list[str]) -> Response:
        exchange, queue = self._pair(vhost, route)
        key = _bad(lambda: declarations.routing_key_of(route[6]))
        self.gate.check_frame(p, vhost, bp.Unbind(0, queue, exchange, key))
        names = Names.of(vhost)
        broker = self.host.broker
        return await self._deleted(
            lambda: broker.unbind(names.inn(queue), names.exchange_in(exchange), key),
            names,
            "unbinding",
        )

    def between(self, vhost: str, exchange: str, queue: str) -> list[dict[str, Any]]:
        rows = definitions.binding_rows(self.host.broker, vhost)
        return [r for r in rows if r["source"] == exchange and r["destination"] == queue]

    def queue_bindings(self, vhost: str, name: str) -> list[dict[str, Any]]:
        """A queue's bindings, its implicit one to the default exchange first
        (as RabbitMQ lists it)."""
        if _internal(Names.of(vhost), name) not in self.host.broker.queues:
            raise HTTPError(404, f"no queue '{name}' in vhost '{vhost}'")
        rows = definitions.binding_rows(self.host.broker, vhost)
        return [_default_binding(vhost, name)] + [r for r in rows if r["destination"] == name]

    def source_bindings(self, vhost: str, name: str) -> list[dict[str, Any]]:
        """The bindings an exchange routes by (the default exchange: every
        queue of the vhost, by its name)."""
        self._exchange(vhost, name)
        if name == DEFAULT_EXCHANGE:
            names = Names.of(vhost)
            queues = sorted(split(q)[1] for q in self.host.broker.queues if names.owns(q))
            return [_default_binding(vhost, q) for q in queues]
        rows = definitions.binding_rows(self.host.broker, vhost)
        return [r for r in rows if r["source"] == name]


def _default_binding(vhost: str, queue: str) -> dict[str, Any]:
    return {
        "source": "",
        "vhost": vhost,
        "destination": queue,
        "destination_type": "queue",
        "routing_key": queue,
        "arguments": {},
        "properties_key": declarations.properties_key(queue),
    }
