"""Exchanges, queues and bindings: declaring, deleting, purging, binding and
routing. A helper the broker owns; it knows no connection and no message
in flight.

Invariants:

* ``queues`` and ``exchanges`` are the broker's own dicts (``Broker.queues``
  and ``Broker.exchanges`` are these very objects). Queues come into being and
  leave them only here.
* A durable change writes its rows into the owner's batch of the current tick
  (read through the owner every time: the batch is replaced at each flush), in
  the same batch as the change itself. A binding is stored only when its
  exchange and its queue are both durable: a transient end would not come back
  after a restart to be bound again.
* Declaring again with the same settings changes nothing; with other settings
  it is refused (``PRECONDITION_FAILED``) and changes nothing either.
* A deleted queue is marked ``deleted`` and its ready window cleared (which
  bumps its epoch) before it is handed back, so page reads and commits in
  flight for it are discarded; its delayed messages and its consumers are the
  broker's to end.
* The default exchange (the empty name) routes a key to the queue of that
  name; a route never names a queue that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from brokerd_protocol import ErrorCode

from .errors import BrokerError, invalid, not_found
from .memory import MemoryBudget
from .options import QueueOptions, check_name
from .queues import QueueState
from .routing import EXCHANGE_TYPES, Router, make_router
from .storage.base import Batch, Recovered


class Recorder(Protocol):
    """Where durable changes go: the current tick's batch (which asks for its
    own flush on its first change)."""

    batch: Batch


@dataclass(slots=True)
class Exchange:
    name: str
    type: str
    durable: bool
    router: Router


class Topology:
    def __init__(self, memory: MemoryBudget, recorder: Recorder) -> None:
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, QueueState] = {}
        #: Shared with every queue (see memory.py).
        self.memory = memory
        self._recorder = recorder

    @property
    def batch(self) -> Batch:
        return self._recorder.batch

    def restore(self, rec: Recovered) -> None:
        """Exchanges, queues, bindings and ready counts as stored."""
        for name, etype in rec.exchanges:
            self.exchanges[name] = Exchange(name, etype, True, make_router(etype))
        for qr in rec.queues:
            self.queues[qr.name] = QueueState(
                qr.name, True, QueueOptions.from_wire(qr.options), self.memory
            )
        for queue, exchange, key in rec.bindings:
            ex = self.exchanges.get(exchange)
            if ex is not None and queue in self.queues:
                ex.router.bind(queue, key)
        for (qname, prio), count in rec.ready_counts.items():
            q = self.queues.get(qname)
            if q is not None:
                q.disk[prio] += count

    # --- exchanges ------------------------------------------------------------

    def declare_exchange(self, name: str, etype: str, durable: bool) -> None:
        check_name("exchange", name)
        if etype not in EXCHANGE_TYPES:
            raise invalid(f"exchange type must be one of {', '.join(sorted(EXCHANGE_TYPES))}")
        ex = self.exchanges.get(name)
        if ex is not None:
            if ex.type != etype or ex.durable != durable:
                raise BrokerError(
                    ErrorCode.PRECONDITION_FAILED,
                    f"exchange {name!r} exists as {'durable' if ex.durable else 'transient'} "
                    f"{ex.type}",
                )
            return
        self.exchanges[name] = Exchange(name, etype, durable, make_router(etype))
        if durable:
            self.batch.put_exchange(name, etype)

    def delete_exchange(self, name: str) -> None:
        if not name:
            raise invalid("the default exchange cannot be deleted")
        ex = self.exchanges.pop(name, None)
        if ex is None:
            raise not_found(f"no exchange {name!r}")
        if ex.durable:
            self.batch.delete_exchange(name)

    # --- queues ---------------------------------------------------------------

    def declare_queue(self, name: str, durable: bool, raw_options: dict[str, Any]) -> None:
        check_name("queue", name)
        options = QueueOptions.from_wire(raw_options)
        q = self.queues.get(name)
        if q is not None:
            if (
                q.options.max_priority is None
                and options.max_priority is not None
                and q.durable == durable
                and q.options == replace(options, max_priority=None)
            ):
                # Stored before brokerd kept x-max-priority (it was accepted
                # and dropped), so an unchanged app's declare must not be
                # refused after an upgrade: the first value declared is kept.
                q.options = options
                if durable:
                    self.batch.put_queue(name, options.to_wire())
                return
            if q.durable != durable or q.options != options:
                raise BrokerError(
                    ErrorCode.PRECONDITION_FAILED,
                    f"queue {name!r} exists with different settings "
                    f"(durable={q.durable}, {q.options.to_wire()})",
                )
            return
        self.queues[name] = QueueState(name, durable, options, self.memory)
        if durable:
            self.batch.put_queue(name, options.to_wire())

    def delete_queue(self, name: str) -> tuple[QueueState, int]:
        """Remove the queue, its bindings and its rows; returns the queue
        (marked deleted, its delayed messages and consumers still attached)
        and the messages it held, arriving and delayed ones included."""
        q = self.queue(name)
        del self.queues[name]
        q.deleted = True
        count = q.ready_count + len(q.arriving) + q.arriving_delayed + q.delayed
        q.clear_ready()
        for ex in self.exchanges.values():
            ex.router.unbind_queue(name)
        if q.durable:
            self.batch.delete_queue(name)
        return q, count

    def purge_queue(self, name: str) -> int:
        """Drop the queue's ready messages; leased and delayed ones stay."""
        q = self.queue(name)
        count = q.ready_count + len(q.arriving)
        cursors = list(q.cursor)
        dropped = q.clear_ready()
        dropped.extend(q.arriving)
        q.arriving.clear()
        if q.durable:
            for m in dropped:
                self.batch.delete(m.id)
            for p in range(len(cursors)):
                self.batch.purge_ready(name, p, cursors[p])
        return count

    def queue(self, name: str) -> QueueState:
        q = self.queues.get(name)
        if q is None:
            raise not_found(f"no queue {name!r}")
        return q

    def queue_stats(self, name: str) -> dict[str, Any]:
        return self.queue(name).stats()

    # --- bindings and routes --------------------------------------------------

    def bind(self, queue: str, exchange: str, key: str) -> None:
        q = self.queue(queue)
        ex = self._exchange_for_binding(exchange)
        if ex.router.bind(queue, key) and ex.durable and q.durable:
            self.batch.put_binding(queue, exchange, key)

    def unbind(self, queue: str, exchange: str, key: str) -> None:
        self.queue(queue)
        ex = self._exchange_for_binding(exchange)
        if not ex.router.unbind(queue, key):
            raise not_found(f"no binding of {queue!r} to {exchange!r} with key {key!r}")
        if ex.durable:
            self.batch.delete_binding(queue, exchange, key)

    def _exchange_for_binding(self, name: str) -> Exchange:
        if not name:
            raise invalid("queues are bound to the default exchange implicitly")
        ex = self.exchanges.get(name)
        if ex is None:
            raise not_found(f"no exchange {name!r}")
        return ex

    def route(self, exchange: str, key: str) -> list[QueueState]:
        if not exchange:
            q = self.queues.get(key)
            return [q] if q is not None else []
        ex = self.exchanges.get(exchange)
        if ex is None:
            raise not_found(f"no exchange {exchange!r}")
        queues = self.queues
        return [queues[n] for n in ex.router.route(key) if n in queues]
