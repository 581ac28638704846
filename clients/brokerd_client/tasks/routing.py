"""Where a task message goes: (exchange, routing key) and the queue to declare.

Precedence, as in Celery: options given to ``apply_async`` win over the task's
own ``queue=``/``routing_key=``, which win over ``task_routes`` (first
matching glob, in order), which win over the defaults.

How a route becomes an address:

* a **queue** is named: publish to that queue's exchange with its binding key
  when the key is concrete, or straight to the queue through brokerd's default
  exchange (``""`` routes by queue name) when the queue has no exchange or is
  bound with a wildcard pattern (``task.#`` is not a key one can publish with).
  An explicit ``routing_key`` alongside a queue is used with the queue's exchange;
* only a **routing_key** is given: publish it to ``task_default_exchange``
  (the bindings decide the queue);
* nothing: ``task_default_queue``, addressed as above.

Every publish is ``mandatory``: a message that matches no queue is an error at
``delay()``, never a silently dropped task.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .queues import Exchange, Queue

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["Route", "Router", "Topology"]


@dataclass(frozen=True, slots=True)
class Route:
    """The address of one task message; ``queue`` is the queue it is meant for,
    when known, so a producer can declare it before the first publish."""

    exchange: str
    routing_key: str
    queue: str | None
    priority: int | None = None


def _is_pattern(key: str) -> bool:
    return any(word in ("*", "#") for word in key.split("."))


@dataclass(frozen=True, slots=True)
class Binding:
    queue: str
    exchange: str
    routing_key: str


class Topology:
    """Queues, exchanges and bindings an app declares, derived from its settings."""

    def __init__(self, conf: Settings) -> None:
        self.conf = conf
        self.queues: dict[str, Queue] = {q.name: q for q in conf.task_queues}
        if conf.task_default_queue not in self.queues:
            self.queues[conf.task_default_queue] = Queue(conf.task_default_queue)

    def queue(self, name: str) -> Queue:
        """The declaration for ``name``; a queue not in ``task_queues`` is
        created with the default binding when ``task_create_missing_queues``."""
        q = self.queues.get(name)
        if q is not None:
            return q
        if not self.conf.task_create_missing_queues:
            from .exceptions import ConfigurationError

            raise ConfigurationError(
                f"queue {name!r} is not in task_queues and task_create_missing_queues is off"
            )
        return Queue(name)

    def exchange_of(self, q: Queue) -> Exchange | None:
        """The exchange ``q`` is bound to, or ``None`` for the default exchange."""
        if isinstance(q.exchange, Exchange):
            return q.exchange if q.exchange.name else None
        name = self.conf.task_default_exchange if q.exchange is None else q.exchange
        if not name:
            return None
        etype = (
            self.conf.task_default_exchange_type
            if name == self.conf.task_default_exchange
            else "direct"
        )
        return Exchange(name, etype)

    def binding_of(self, q: Queue) -> Binding | None:
        exchange = self.exchange_of(q)
        if exchange is None:
            return None
        key = q.routing_key
        if key is None:
            key = (
                self.conf.task_default_routing_key
                if q.name == self.conf.task_default_queue and self.conf.task_default_routing_key
                else q.name
            )
        return Binding(q.name, exchange.name, key)

    def lease_of(self, q: Queue) -> float:
        return q.lease if q.lease is not None else self.conf.task_default_lease

    def address(self, q: Queue, routing_key: str | None = None) -> tuple[str, str]:
        """(exchange, routing key) that delivers to ``q``."""
        binding = self.binding_of(q)
        if binding is None:
            return "", q.name
        if routing_key is not None:
            return binding.exchange, routing_key
        if _is_pattern(binding.routing_key):
            return "", q.name
        return binding.exchange, binding.routing_key


class Router:
    """Resolves task names to :class:`Route` objects for one app's settings."""

    def __init__(self, conf: Settings) -> None:
        self.conf = conf
        self.topology = Topology(conf)
        self._compiled = tuple(
            (re.compile(fnmatch.translate(pattern)), route) for pattern, route in conf.task_routes
        )
        self._cached = lru_cache(maxsize=1024)(self._route_uncached)

    def from_settings(self, name: str) -> dict[str, Any]:
        """The first ``task_routes`` entry matching ``name`` (exact or glob)."""
        for pattern, route in self._compiled:
            if pattern.match(name):
                return route
        return {}

    def route(
        self,
        name: str,
        *,
        queue: str | None = None,
        routing_key: str | None = None,
        exchange: str | None = None,
        task_options: dict[str, Any] | None = None,
    ) -> Route:
        """The address for task ``name`` with call options over task options
        over ``task_routes`` over defaults."""
        if task_options:
            queue = queue if queue is not None else task_options.get("queue")
            routing_key = (
                routing_key if routing_key is not None else task_options.get("routing_key")
            )
            exchange = exchange if exchange is not None else task_options.get("exchange")
        return self._cached(name, queue, routing_key, exchange)

    def _route_uncached(
        self, name: str, queue: str | None, routing_key: str | None, exchange: str | None
    ) -> Route:
        priority = None
        if queue is None and routing_key is None and exchange is None:
            configured = self.from_settings(name)
            queue = configured.get("queue")
            routing_key = configured.get("routing_key")
            exchange = configured.get("exchange")
            priority = configured.get("priority")
        conf = self.conf
        if queue is not None:
            q = self.topology.queue(queue)
            if exchange is not None:
                return Route(exchange, routing_key or q.name, q.name, priority)
            ex, key = self.topology.address(q, routing_key)
            return Route(ex, key, q.name, priority)
        if routing_key is not None or exchange is not None:
            ex = conf.task_default_exchange if exchange is None else exchange
            key = routing_key if routing_key is not None else conf.task_default_queue
            # The queue is decided by the bindings; declare every known queue.
            return Route(ex, key, None, priority)
        q = self.topology.queue(conf.task_default_queue)
        ex, key = self.topology.address(q)
        return Route(ex, key, q.name, priority)
