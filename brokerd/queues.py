"""One queue's state: its in-memory window of ready messages, the count of
those still on disk, its consumers and its counters; and the core's side of
a connection (``Connection``, speaking through the session's ``Peer``), which
owns the consumers and the deliveries leased to them.

Memory stays flat however deep a durable queue grows: at most ``WINDOW``
ready messages (per queue) live in memory; the rest are counted per priority
in ``disk`` and paged in by sequence number (``cursor`` is the highest seq
already brought into memory for that priority). Every seq is drawn from one
increasing counter, so "seq > cursor" is exactly the set of ready messages of
that priority that are on disk only.

The window is bounded in body bytes as well (``MemoryBudget``): a durable
message past its queue's byte window, or past the broker-wide limit, stays on
disk exactly as one past ``WINDOW`` does. ``mem_bytes`` is the body bytes of
the messages in ``ready``; every change to it is mirrored in the shared
budget's ``used``.

A page read goes through three steps, all here: ``ask_page`` marks it wanted
(``loading``), ``start_page`` sizes it when the broker issues it and reserves
its bytes in the budget, ``take_page`` settles the reservation and adds the
rows. A read that a purge or delete overtook (the queue's ``epoch`` moved)
adds nothing, so purged messages never come back.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Any, NamedTuple, Protocol

from brokerd_protocol import MAX_PRIORITY, ErrorCode

from .memory import MemoryBudget
from .message import Message
from .options import QueueOptions

#: Ready messages a durable queue keeps in memory at most (its page window).
WINDOW = 2048
#: Refill the window from disk when fewer than this many remain.
LOW_WATER = 512

PRIORITIES = range(MAX_PRIORITY, -1, -1)

#: A connection's leased-bytes limit when none is given: ``Broker.open``
#: always gives its ``--max-unacked-bytes`` (connections made elsewhere,
#: such as the management API's publisher, never consume).
NO_BYTE_LIMIT = 1 << 62


class Peer(Protocol):
    """What the core needs from a connection (implemented by the session)."""

    writable: bool

    def send_delivery(self, consumer: Consumer, delivery: Delivery) -> None: ...

    def send_confirms(self, routed: list[int], unroutable: list[int]) -> None: ...

    def send_publish_error(self, seq: int, code: ErrorCode, message: str) -> None: ...

    def send_consumer_cancelled(self, consumer_id: int, reason: str) -> None: ...


class Connection:
    """The core's per-connection state: its consumers and leased deliveries."""

    __slots__ = (
        "byte_limit",
        "closed",
        "consumers",
        "deliveries",
        "feed_turn",
        "leased_bytes",
        "next_consumer",
        "next_delivery",
        "peer",
        "stalled",
    )

    def __init__(self, peer: Peer, byte_limit: int = NO_BYTE_LIMIT) -> None:
        self.peer = peer
        #: Body bytes of its deliveries (``unacked.py``), and the most it may
        #: hold before its consumers get no more.
        self.leased_bytes = 0
        self.byte_limit = byte_limit
        #: Which consumer's queue is fed first when it falls back under that.
        self.feed_turn = 0
        self.consumers: dict[int, Consumer] = {}
        self.deliveries: dict[int, Delivery] = {}
        self.next_consumer = 1
        self.next_delivery = 1
        self.closed = False
        #: A lease of this connection expired and nothing has arrived from it
        #: since: its consumers get no deliveries until it shows life
        #: (``Broker.heard_from``), so a frozen process does not take back
        #: the messages it just lost, burning their attempts.
        self.stalled = False

    @property
    def writable(self) -> bool:
        return self.peer.writable


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
        return (
            self.active
            and self.unacked < self.prefetch
            and conn.leased_bytes < conn.byte_limit
            and conn.writable
            and not conn.stalled
        )

    def detach(self) -> None:
        """End the consumer: no more deliveries (those it holds stay leased)."""
        self.active = False
        self.conn.consumers.pop(self.id, None)
        with contextlib.suppress(ValueError):
            self.queue.consumers.remove(self)


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


class PageRead(NamedTuple):
    """One read of a queue's disk backlog: rows of ``priority`` with seq
    above ``after``, at most ``limit`` of them and about ``max_bytes``."""

    priority: int
    after: int
    limit: int
    max_bytes: int
    #: The queue's epoch when the read was issued (a purge or delete bumps it).
    epoch: int


class QueueState:
    def __init__(
        self,
        name: str,
        durable: bool,
        options: QueueOptions,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.name = name
        self.durable = durable
        self.options = options
        #: Shared by every queue of one broker (a private one if none is given).
        self.budget = budget if budget is not None else MemoryBudget()
        self.ready: list[deque[Message]] = [deque() for _ in range(MAX_PRIORITY + 1)]
        #: Ready messages in memory (sum of the deques).
        self.mem = 0
        #: Body bytes of the ready messages in memory.
        self.mem_bytes = 0
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
        #: Messages published to this queue that wait for their batch's write,
        #: oldest first (all of them unless the broker delivers before writes).
        self.arriving: deque[Message] = deque()
        #: Delayed messages published to this queue whose batch has not committed.
        self.arriving_delayed = 0
        self.consumers: list[Consumer] = []
        self._rr = 0
        self.deleted = False
        #: Messages published into, delivered from and acked in this queue
        #: (monotonic; the management API's rates are their differences).
        self.published = 0
        self.delivered = 0
        self.acked = 0

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
        n = len(m.body)
        if (
            self.durable
            and (
                self.disk[p]
                or self.mem >= WINDOW
                or self.mem_bytes + n > self.budget.window
                or self.budget.used + n > self.budget.cache
            )
            and (seq is None or seq > self.cursor[p])
        ):
            self.disk[p] += 1
            return False
        self.ready[p].append(m)
        self.mem += 1
        self.mem_bytes += n
        self.budget.used += n
        if m.seq is not None and m.seq > self.cursor[p]:
            self.cursor[p] = m.seq
        return True

    def push_front(self, m: Message) -> None:
        """Return a message that was delivered to the head of its priority."""
        self.ready[m.priority].appendleft(m)
        self.mem += 1
        n = len(m.body)
        self.mem_bytes += n
        self.budget.used += n

    def withdraw(self, m: Message, in_memory: bool) -> bool:
        """Take back a message whose write failed after it entered the queue
        (``push`` said where: memory or disk only). False when it was gone
        already: delivered, expired or dropped; one on disk only was never read."""
        if not in_memory:
            if self.disk[m.priority]:
                self.disk[m.priority] -= 1
            return True
        try:
            self.ready[m.priority].remove(m)  # by identity: Message has no __eq__
        except ValueError:
            return False
        self.mem -= 1
        n = len(m.body)
        self.mem_bytes -= n
        self.budget.used -= n
        return True

    def pop(self) -> Message | None:
        """The next message to deliver: highest priority, then oldest."""
        if not self.mem:
            return None
        ready = self.ready
        if len(ready[0]) == self.mem:  # the common case: everything at priority 0
            m = ready[0].popleft()
        else:
            for p in PRIORITIES:
                if ready[p]:
                    m = ready[p].popleft()
                    break
            else:  # pragma: no cover
                raise AssertionError("queue memory count out of step")
        self.mem -= 1
        n = len(m.body)
        self.mem_bytes -= n
        self.budget.used -= n
        return m

    def pop_tail_victim(self) -> Message | None:
        """The message drop_head sacrifices: oldest of the lowest priority held."""
        for p in range(MAX_PRIORITY + 1):
            if self.ready[p]:
                m = self.ready[p].popleft()
                self.mem -= 1
                n = len(m.body)
                self.mem_bytes -= n
                self.budget.used -= n
                return m
        return None

    def over_max_length(self) -> list[Message]:
        """The messages ``drop_head`` sacrifices now that the queue may be past
        its ``max_length`` (which bounds ready messages, as in RabbitMQ: delayed
        ones count once due). Those still on disk are owed, dropped once paged
        in (``owed_drops``)."""
        limit = self.options.max_length
        if limit is None or self.options.overflow != "drop_head":
            return []
        victims: list[Message] = []
        excess = self.ready_count - limit
        while excess > 0:
            victim = self.pop_tail_victim()
            if victim is None:
                self.drops_owed = min(self.drops_owed + excess, self.on_disk)
                break
            victims.append(victim)
            excess -= 1
        return victims

    def owed_drops(self) -> list[Message]:
        """Messages owed to ``max_length`` that are now in memory to drop."""
        victims: list[Message] = []
        while self.drops_owed and self.mem:
            victim = self.pop_tail_victim()
            assert victim is not None
            self.drops_owed -= 1
            victims.append(victim)
        return victims

    def attach(self, conn: Connection, prefetch: int, lease: float) -> Consumer:
        """A new consumer on this queue; its id is the connection's next number."""
        cid = conn.next_consumer
        conn.next_consumer += 1
        c = Consumer(cid, conn, self, prefetch, lease)
        conn.consumers[cid] = c
        self.consumers.append(c)
        return c

    def pop_expired(self, now: float) -> list[Message]:
        """Take the expired messages at the head of each priority."""
        expired: list[Message] = []
        for p in PRIORITIES:
            dq = self.ready[p]
            while dq and dq[0].expires_at is not None and dq[0].expires_at <= now:
                expired.append(dq.popleft())
        if expired:
            n = sum(len(m.body) for m in expired)
            self.mem -= len(expired)
            self.mem_bytes -= n
            self.budget.used -= n
        return expired

    def add_page(self, p: int, page: list[Message]) -> None:
        """Append messages read from disk (in seq order) to priority ``p``."""
        dq = self.ready[p]
        dq.extend(page)
        n = sum(len(m.body) for m in page)
        self.mem += len(page)
        self.mem_bytes += n
        self.budget.used += n
        if page:
            self.cursor[p] = page[-1].seq or self.cursor[p]
        self.disk[p] -= len(page)
        if self.disk[p] < 0 or not page:
            # Counts drifted (rows removed behind our back): trust the disk.
            self.disk[p] = 0

    def wants_page(self) -> bool:
        if not self.durable or self.loading or self.mem >= LOW_WATER or not any(self.disk):
            return False
        if self.mem_bytes >= self.budget.low_water:
            return False
        return self.page_bytes() > 0

    def ask_page(self) -> bool:
        """True when a page read is due and not yet asked for; it is then
        asked for (``loading``) until ``start_page`` issues or drops it."""
        if not self.wants_page():
            return False
        self.loading = True
        return True

    def start_page(self) -> PageRead | None:
        """The read for the page asked for, its bytes reserved in the budget
        until ``take_page``; None when nothing is left to read or no room."""
        if self.deleted or not self.loading:
            return None
        # Sized now, not when asked for: other pages may have used the room since.
        max_bytes = self.page_bytes()
        if not self.on_disk or not max_bytes:
            self.loading = False
            return None
        p = self.page_priority()
        read = PageRead(p, self.cursor[p], WINDOW - self.mem, max_bytes, self.epoch)
        self.budget.used += max_bytes  # reserved until the rows arrive
        return read

    def take_page(self, read: PageRead, result: list[Message] | BaseException) -> bool:
        """A page read returned: give back its reservation and add its rows.
        False when a purge or delete since made it stale (nothing is added,
        a failure included); a failure still current is left to the caller."""
        self.budget.used -= read.max_bytes
        if self.epoch != read.epoch or self.deleted:
            return False
        self.loading = False
        if not isinstance(result, BaseException):
            self.add_page(read.priority, result)
        return True

    def page_bytes(self) -> int:
        """Body bytes the next page may bring in: what is left of the queue's
        byte window and of the broker's budget. A queue with consumers and
        nothing in memory may always read one message, so it never stalls."""
        room = min(self.budget.window - self.mem_bytes, self.budget.room())
        if room <= 0 and not self.mem and self.consumers:
            return 1
        return max(0, room)

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
        self.budget.used -= self.mem_bytes
        self.mem_bytes = 0
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
