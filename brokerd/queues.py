"""One queue's state: its in-memory window of ready messages, the count of
those still on disk, its consumers and its counters.

Memory stays flat however deep a durable queue grows: at most ``WINDOW``
ready messages (per queue) live in memory; the rest are counted per priority
in ``disk`` and paged in by sequence number (``cursor`` is the highest seq
already brought into memory for that priority). Every seq is drawn from one
increasing counter, so "seq > cursor" is exactly the set of ready messages of
that priority that are on disk only.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from brokerd_protocol import MAX_PRIORITY

from .message import Message
from .options import QueueOptions

if TYPE_CHECKING:
    from .broker import Connection

#: Ready messages a durable queue keeps in memory at most (its page window).
WINDOW = 2048
#: Refill the window from disk when fewer than this many remain.
LOW_WATER = 512

PRIORITIES = range(MAX_PRIORITY, -1, -1)


class Consumer:
    __slots__ = ("active", "conn", "id", "lease", "prefetch", "queue", "unacked")

    def __init__(
        self, id: int, conn: Connection, queue: QueueState, prefetch: int, lease: float
    ) -> None:
        self.id = id
        self.conn = conn
        self.queue = queue
        self.prefetch = prefetch
        self.lease = lease
        self.unacked = 0
        self.active = True

    def has_credit(self) -> bool:
        conn = self.conn
        return self.active and self.unacked < self.prefetch and conn.writable and not conn.stalled


class Delivery:
    """A message leased to one consumer until ``deadline``."""

    __slots__ = ("consumer", "deadline", "id", "message", "queue", "started")

    def __init__(
        self, id: int, message: Message, consumer: Consumer, queue: QueueState, deadline: float
    ) -> None:
        self.started = deadline - consumer.lease
        self.id = id
        self.message = message
        self.consumer = consumer
        self.queue = queue
        self.deadline = deadline


class QueueState:
    def __init__(self, name: str, durable: bool, options: QueueOptions) -> None:
        self.name = name
        self.durable = durable
        self.options = options
        self.ready: list[deque[Message]] = [deque() for _ in range(MAX_PRIORITY + 1)]
        #: Ready messages in memory (sum of the deques).
        self.mem = 0
        #: Ready messages on disk only, per priority.
        self.disk = [0] * (MAX_PRIORITY + 1)
        self.cursor = [0] * (MAX_PRIORITY + 1)
        self.loading = False
        #: Bumped by purge and delete so a page load started before is discarded.
        self.epoch = 0
        self.delayed = 0
        self.leased = 0
        #: Messages past max_length (drop_head) still to be dropped once in memory.
        self.drops_owed = 0
        #: Messages published to this queue whose batch has not committed yet,
        #: oldest first: they enter the queue only once they are durable.
        self.arriving: deque[Message] = deque()
        #: Delayed messages published to this queue whose batch has not committed.
        self.arriving_delayed = 0
        self.consumers: list[Consumer] = []
        self._rr = 0
        self.deleted = False

    # --- counts ---------------------------------------------------------------

    @property
    def on_disk(self) -> int:
        return sum(self.disk)

    @property
    def ready_count(self) -> int:
        return self.mem + self.on_disk - self.drops_owed

    def stats(self) -> dict[str, Any]:
        return {
            "ready": self.ready_count,
            "leased": self.leased,
            "delayed": self.delayed,
            "consumers": len(self.consumers),
        }

    # --- the ready window ---------------------------------------------------

    def push(self, m: Message) -> bool:
        """Add a newly ready message; False means it stays on disk only.

        A message whose seq is at or below the paging cursor goes into memory
        even past the window: pages load only ``seq > cursor``, so on disk it
        would never be found. That happens when a publish lands after its
        commit behind a newer message (a dead-letter, a released delay) that
        entered the window at once; such stragglers are bounded by the bytes
        awaiting commit."""
        p = m.priority
        seq = m.seq
        if (
            self.durable
            and (self.disk[p] or self.mem >= WINDOW)
            and (seq is None or seq > self.cursor[p])
        ):
            self.disk[p] += 1
            return False
        self.ready[p].append(m)
        self.mem += 1
        if m.seq is not None and m.seq > self.cursor[p]:
            self.cursor[p] = m.seq
        return True

    def push_front(self, m: Message) -> None:
        """Return a message that was delivered to the head of its priority."""
        self.ready[m.priority].appendleft(m)
        self.mem += 1

    def pop(self) -> Message | None:
        """The next message to deliver: highest priority, then oldest."""
        if not self.mem:
            return None
        ready = self.ready
        if len(ready[0]) == self.mem:  # the common case: everything at priority 0
            self.mem -= 1
            return ready[0].popleft()
        for p in PRIORITIES:
            if ready[p]:
                self.mem -= 1
                return ready[p].popleft()
        raise AssertionError("queue memory count out of step")  # pragma: no cover

    def pop_tail_victim(self) -> Message | None:
        """The message drop_head sacrifices: oldest of the lowest priority held."""
        for p in range(MAX_PRIORITY + 1):
            if self.ready[p]:
                self.mem -= 1
                return self.ready[p].popleft()
        return None

    def wants_page(self) -> bool:
        return self.durable and not self.loading and self.mem < LOW_WATER and any(self.disk)

    def page_priority(self) -> int:
        for p in PRIORITIES:
            if self.disk[p]:
                return p
        raise AssertionError("no disk backlog")  # pragma: no cover

    def clear_ready(self) -> list[Message]:
        """Drop every ready message (purge); returns those that were in memory."""
        dropped = [m for dq in self.ready for m in dq]
        for dq in self.ready:
            dq.clear()
        self.mem = 0
        self.disk = [0] * (MAX_PRIORITY + 1)
        self.drops_owed = 0
        self.epoch += 1
        self.loading = False
        return dropped

    # --- consumers ----------------------------------------------------------

    def next_consumer(self) -> Consumer | None:
        """Round-robin over consumers that have prefetch credit."""
        consumers = self.consumers
        n = len(consumers)
        for i in range(n):
            idx = (self._rr + i) % n
            c = consumers[idx]
            if c.has_credit():
                self._rr = idx + 1
                return c
        return None
