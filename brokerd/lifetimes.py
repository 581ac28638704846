"""When a queue ends on its own: ``auto_delete`` and ``expires`` (SPEC §9.2).

Both serve clients that declare a queue per process or per request (Celery's
remote-control reply queues, event receivers) and may vanish without
deleting it; without them every such client would leave a queue behind.

Invariants:

* ``auto_delete``: a queue is deleted when its last consumer goes (cancelled,
  or its connection closed). Only a consumer leaving triggers it, so a queue
  that never had a consumer since it was declared or recovered stays
  (RabbitMQ's rule): declaring it and then consuming from it is not a race
  against its deletion.
* ``expires``: a queue is deleted once it has been *unused* for that many
  seconds: no consumer attached, no DeclareQueue and no QueueStats of it
  (RabbitMQ's ``x-expires``). Each of those restarts the period; while a
  consumer is attached the queue never expires. After a restart the period
  starts at recovery: the broker does not know how long it was down.
* Deadlines live in one ``LeaseWheel`` read by the broker's tick: no task or
  timer per queue. A queue is in the wheel exactly while it has ``expires``,
  no consumer and is not deleted; the wheel fires never early, at most one
  resolution step late.

This module decides; the broker deletes (as DeleteQueue does: messages
dropped, bindings removed, a durable queue's rows deleted in the tick's batch).
"""

from __future__ import annotations

from .clock import Clock
from .leases import LeaseWheel
from .queues import QueueState


class Lifetimes:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._unused: LeaseWheel[QueueState] = LeaseWheel()

    def __len__(self) -> int:
        """Queues whose expiry is counting down."""
        return len(self._unused)

    def used(self, q: QueueState) -> None:
        """A DeclareQueue or QueueStats of ``q``, or its recovery: its unused
        period starts again (if it has ``expires`` and no consumer)."""
        expires = q.options.expires
        if expires is not None and not q.consumers and not q.deleted:
            self._unused.add(q, self._clock.now() + expires)

    def consumer_added(self, q: QueueState) -> None:
        self._unused.discard(q)

    def consumer_gone(self, q: QueueState) -> bool:
        """A consumer of ``q`` went; True if ``q`` must now be deleted (auto_delete)."""
        if q.consumers or q.deleted:
            return False
        if q.options.auto_delete:
            return True
        self.used(q)
        return False

    def forget(self, q: QueueState) -> None:
        """``q`` was deleted."""
        self._unused.discard(q)

    def expired(self, now: float) -> list[QueueState]:
        """Queues unused for their ``expires``: the broker deletes them."""
        return [q for q in self._unused.pop_due(now) if not q.deleted and not q.consumers]
