"""Turning a task call into a brokerd message, and declaring where it goes.

The message format itself (body, message id, headers) is owned by
:mod:`.message`, which builds the headers here and parses them in the worker.
What this module adds:

* ``countdown``/``eta`` become the publish ``delay``/``not_before``: the broker
  holds the message durably until then; no worker sleeps on it;
* ``mandatory``: a message that routes to no queue is refused (an error at
  ``delay()``), never silently dropped;
* a message larger than the broker's frame limit is refused by the client
  before it is sent (``MessageTooLarge``), also at ``delay()``.

Topology: before the first publish a producer declares the app's queues,
exchanges and bindings (once per connection), plus any queue a route names
that is not in ``task_queues``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..checks import epoch
from ..errors import PreconditionFailed
from ..message import Message
from .exceptions import ConfigurationError
from .message import build_headers
from .routing import Route, Router, Topology
from .serialization import content_type_of, encode_body
from .task import SEND_OPTIONS

if TYPE_CHECKING:
    from ..client import AsyncClient
    from ..sync import Client
    from .app import App
    from .queues import Queue
    from .task import Task

__all__ = ["TaskMessage", "build_message", "declare_async", "declare_sync"]


class TaskMessage:
    """A built task message: the wire :class:`Message`, its id and route."""

    __slots__ = ("message", "route", "task_id")

    def __init__(self, task_id: str, message: Message, route: Route) -> None:
        self.task_id = task_id
        self.message = message
        self.route = route


def build_message(
    app: App,
    router: Router,
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
    task: Task[Any, Any] | None,
) -> TaskMessage:
    """Validate ``options`` and build the message for one task call."""
    unknown = set(options) - SEND_OPTIONS
    if unknown:
        raise TypeError(f"apply_async got unknown options {sorted(unknown)}")
    conf = app.conf
    task_id = options.get("task_id") or str(uuid.uuid4())
    route = router.route(
        name,
        queue=options.get("queue"),
        routing_key=options.get("routing_key"),
        exchange=options.get("exchange"),
        task_options=task.routing_options if task is not None else None,
    )
    serializer = (
        options.get("serializer") or (task.serializer if task else None) or conf.task_serializer
    )
    compression = options.get("compression", conf.task_compression)
    expires = options.get("expires", task.expires if task is not None else None)
    if expires is not None:
        expires = (
            time.time() + float(expires)
            if isinstance(expires, int | float) and not isinstance(expires, bool)
            else epoch("expires", expires)
        )
    ignore = options.get("ignore_result")
    if ignore is None and task is not None:
        ignore = task.ignore_result
    headers = build_headers(
        task=name,
        task_id=task_id,
        retries=int(options.get("retries", 0)),
        content_type=content_type_of(serializer),
        compression=compression,
        expires=expires,
        time_limit=options.get("time_limit"),
        soft_time_limit=options.get("soft_time_limit"),
        parent_id=options.get("parent_id"),
        root_id=options.get("root_id"),
        ignore_result=ignore,
        extra=options.get("headers"),
    )
    body = encode_body(args, kwargs, serializer, compression)
    countdown = options.get("countdown")
    eta = options.get("eta")
    if countdown is not None and eta is not None:
        raise ValueError("give either countdown or eta, not both")
    priority = options.get("priority")
    if priority is None:
        priority = route.priority
    if priority is None and task is not None:
        priority = task.priority
    if priority is None:
        priority = conf.task_default_priority
    message = Message(
        route.exchange,
        route.routing_key,
        body,
        headers=headers,
        delay=float(countdown) if countdown else None,
        not_before=epoch("eta", eta) if eta is not None else None,
        priority=priority or 0,
        message_id=task_id,
        mandatory=True,
    )
    return TaskMessage(task_id, message, route)


# --- declaring the topology -----------------------------------------------------------


def _queue_args(topo: Topology, q: Queue) -> dict[str, Any]:
    return {
        "lease": topo.lease_of(q),
        "max_deliveries": q.max_deliveries,
        "dead_letter_queue": q.dead_letter_queue,
        "max_length": q.max_length,
    }


def _mismatch(q: Queue, exc: PreconditionFailed) -> ConfigurationError:
    return ConfigurationError(
        f"queue {q.name!r} or its exchange already exists on the broker with other options "
        f"({exc.message}); every producer and worker must use the same task_queues settings"
    )


class _Declared:
    """Which queues one connection already declared (``"*"``: all of the app's)."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.lock = threading.Lock()


def _needed(topo: Topology, declared: set[str], route: Route | None) -> list[Queue]:
    todo: list[Queue] = []
    if "*" not in declared:
        todo.extend(topo.queues.values())
    if route is not None and route.queue is not None and route.queue not in declared:
        q = topo.queue(route.queue)
        if q not in todo:
            todo.append(q)
    return todo


def declare_sync(client: Client, topo: Topology, state: _Declared, route: Route | None) -> None:
    """Declare what ``route`` needs (first call: the whole app topology)."""
    if "*" in state.names and (route is None or route.queue is None or route.queue in state.names):
        return
    with state.lock:
        todo = _needed(topo, state.names, route)
        for q in todo:
            ex = topo.exchange_of(q)
            try:
                if ex is not None:
                    client.declare_exchange(ex.name, ex.type)
                client.declare_queue(q.name, q.durable, **_queue_args(topo, q))
            except PreconditionFailed as exc:
                raise _mismatch(q, exc) from None
            binding = topo.binding_of(q)
            if binding is not None:
                client.bind(binding.queue, binding.exchange, binding.routing_key)
            state.names.add(q.name)
        state.names.add("*")


async def declare_async(
    client: AsyncClient, topo: Topology, state: _Declared, route: Route | None
) -> None:
    """:func:`declare_sync` for an :class:`AsyncClient` (one loop: no lock needed)."""
    if "*" in state.names and (route is None or route.queue is None or route.queue in state.names):
        return
    for q in _needed(topo, state.names, route):
        await declare_queue_async(client, topo, q)
        state.names.add(q.name)
    state.names.add("*")


async def declare_queue_async(client: AsyncClient, topo: Topology, q: Queue) -> None:
    ex = topo.exchange_of(q)
    try:
        if ex is not None:
            await client.declare_exchange(ex.name, ex.type)
        await client.declare_queue(q.name, q.durable, **_queue_args(topo, q))
    except PreconditionFailed as exc:
        raise _mismatch(q, exc) from None
    binding = topo.binding_of(q)
    if binding is not None:
        await client.bind(binding.queue, binding.exchange, binding.routing_key)


Declared = _Declared
