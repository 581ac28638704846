"""The broker's bound on leased (delivered, not yet settled) message bodies.

Prefetch counts messages, and a message can be 16 MiB: a consumer with a
prefetch of 1,000 on a queue of big bodies would make the broker hold them
all while they are leased (the broker keeps a leased body, since it needs it
again if the message returns). So the core also counts leased body bytes, per
connection and over all connections, and stops delivering at either limit:

* ``per_connection`` (``--max-unacked-bytes``): a connection whose leased
  bodies reach it gets no more deliveries on any of its consumers
  (``Consumer.has_credit``) until it settles some. Per connection, not per
  consumer: a worker's connection is what one process buffers.
* ``limit`` (``--max-unacked-bytes-total``): while all leased bodies reach it,
  no queue delivers (``Broker._dispatch``).

Invariants:

* **A limit is checked before each delivery**, so a delivery may pass it by
  one message, and a message larger than a limit is still delivered when the
  connection (or the broker) holds nothing else leased: limits slow delivery,
  they never stop it for good. Held bytes stay below ``limit + one body``
  (likewise per connection).
* **Freed bytes feed those that waited first.** Settling (ack, nack, reject,
  lease expiry, disconnect) calls ``release`` once per batch. A connection
  that drops back under its limit is ``reopened``: its consumers' queues are
  fed in turn, starting after the one fed first last time, so a deep queue
  does not keep the room from the connection's other queues. Queues held back
  by the total limit wait in ``starved``, oldest first, and are fed one by
  one while there is room (a queue that delivered and is held back again goes
  to the back; one merely looked at again keeps its place). Starved queues
  come first, then reopened connections, then the settled deliveries' own
  queues.
* Accounting is per message only where it must be (one addition per delivery,
  one per settled delivery summed per batch); the transitions above are per
  batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .queues import Connection, QueueState

MIB = 1024 * 1024
#: Default ``--max-unacked-bytes``: leased body bytes one connection may hold.
DEFAULT_PER_CONNECTION = 64 * MIB
#: Default ``--max-unacked-bytes-total``: leased body bytes of all connections.
DEFAULT_TOTAL = 512 * MIB


class UnackedBytes:
    __slots__ = ("held", "limit", "per_connection", "reopened", "starved")

    def __init__(self, per_connection: int = DEFAULT_PER_CONNECTION, limit: int = DEFAULT_TOTAL):
        if per_connection < 1 or limit < 1:
            raise ValueError("unacked byte limits must be positive")
        self.per_connection = per_connection
        self.limit = limit
        #: Leased body bytes of all connections.
        self.held = 0
        #: Connections that fell back under their limit since the last feed.
        self.reopened: dict[Connection, None] = {}
        #: Queues with ready messages held back by the total limit, oldest first.
        self.starved: dict[QueueState, None] = {}

    def release(self, conn: Connection, freed: int) -> None:
        """``freed`` leased bytes of ``conn`` were settled."""
        before = conn.leased_bytes
        conn.leased_bytes = before - freed
        self.held -= freed
        if before >= conn.byte_limit > before - freed and not conn.closed:
            self.reopened[conn] = None

    def take_reopened(self) -> list[QueueState]:
        """The queues to feed for connections back under their limit, each
        connection's in turn (see the module docstring)."""
        queues: list[QueueState] = []
        for conn in self.reopened:
            consumers = list(conn.consumers.values())
            if not consumers:
                continue
            start = conn.feed_turn % len(consumers)
            conn.feed_turn = start + 1
            queues.extend(c.queue for c in consumers[start:] + consumers[:start])
        self.reopened.clear()
        return queues

    def hold_back(self, q: QueueState, fed: bool) -> None:
        """``q`` has ready messages and consumers but the total limit is
        reached. It keeps its place in line unless it was just ``fed``, in
        which case it goes to the back."""
        if fed:
            self.starved.pop(q, None)
        self.starved[q] = None

    def next_starved(self) -> QueueState | None:
        """The queue that has waited longest for room, if there is room now."""
        if not self.starved or self.held >= self.limit:
            return None
        q = next(iter(self.starved))
        del self.starved[q]
        return q
