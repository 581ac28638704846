"""Declaring an app's queues, exchanges and bindings on a connection, once.

Before the first publish on a connection, a producer declares the app's whole
topology (``task_queues``, their exchanges and bindings), plus any queue a
route names that is not in ``task_queues``; a :class:`Declared` per
connection remembers what was done, so later publishes skip straight past.
A queue that already exists with other options is a ``ConfigurationError``
naming it: every producer and worker must use the same settings.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..errors import PreconditionFailed
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from ..client import AsyncClient
    from ..sync import Client
    from .queues import Queue
    from .routing import Route, Topology

__all__ = ["Declared", "declare_async", "declare_queue_async", "declare_sync"]


def _queue_args(topo: Topology, q: Queue) -> dict[str, Any]:
    return {
        "lease": topo.lease_of(q),
        "max_deliveries": q.max_deliveries,
        "dead_letter_queue": q.dead_letter_queue,
        "max_length": q.max_length,
        "max_priority": q.max_priority,
    }


def _mismatch(q: Queue, exc: PreconditionFailed) -> ConfigurationError:
    return ConfigurationError(
        f"queue {q.name!r} or its exchange already exists on the broker with other options "
        f"({exc.message}); every producer and worker must use the same task_queues settings"
    )


class Declared:
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


def declare_sync(client: Client, topo: Topology, state: Declared, route: Route | None) -> None:
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
    client: AsyncClient, topo: Topology, state: Declared, route: Route | None
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
