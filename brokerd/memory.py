"""The broker's budget for message bodies held in memory.

Counting messages does not bound memory: 2,048 ready messages of 1 MiB each
are 2 GiB. So the core also counts the *body bytes* it holds as ready messages
(every queue's in-memory window, durable and transient), as delayed messages
(the due-soonest heap) and as page reads in flight (reserved when a read is
issued, settled when it returns). Invariants, with ``used`` the sum of those:

* Durable messages in memory are a cache of what is on disk. A durable message
  that would take ``used`` past ``cache`` (half the limit), or its queue's
  window past ``window`` (a quarter), stays on disk only (counted, paged in
  later), exactly like a message past the count window.
* A page read asks for at most the room left under ``cache``, and the store
  stops reading once that many bytes are read. A queue with consumers and
  nothing in memory reads one message even with no room, so it always makes
  progress: ``used`` can pass ``cache`` by at most one message per such read.
* Transient messages have no disk to go to: a publish to a transient queue
  while ``used`` is at ``limit`` is refused (``QUEUE_FULL``). Durable caching
  stops at half the limit, so durable backlogs never take the other half from
  transient queues.
* Messages returned by a consumer (nack, lease expiry, disconnect) go back to
  memory whatever the budget says; they were delivered within it, and their
  number is bounded by prefetch.

Not counted here, and bounded elsewhere: leased messages (``unacked.py``:
``max_unacked_bytes`` per connection and ``max_unacked_bytes_total``),
accepted publishes not yet committed (``max_uncommitted``) and each
connection's unsent output (``max_write_buffer``).
"""

from __future__ import annotations

from brokerd_protocol import ErrorCode

from .errors import BrokerError

MIB = 1024 * 1024
#: Default ``--memory-limit``: body bytes of ready and delayed messages in memory.
DEFAULT_MEMORY_LIMIT = 128 * MIB
#: Smallest accepted limit; below it every read would be a single message.
MIN_MEMORY_LIMIT = 1 * MIB
#: Durable messages (ready windows and the delayed heap) are brought into
#: memory only while everything held stays under this share of the limit.
CACHE_SHARE = 2
#: One durable queue's window (and the durable delayed heap) may hold this
#: share of the limit, so one deep queue of big bodies cannot starve the others.
WINDOW_SHARE = 4
#: Refill a window from disk once it holds less than this share of its bytes
#: (the byte analogue of ``LOW_WATER``).
LOW_WATER_SHARE = 4


class MemoryBudget:
    __slots__ = ("cache", "limit", "low_water", "used", "window")

    def __init__(self, limit: int = DEFAULT_MEMORY_LIMIT) -> None:
        if limit < 1:
            raise ValueError("memory limit must be positive")
        self.limit = limit
        self.cache = max(1, limit // CACHE_SHARE)
        #: Bytes one durable queue's ready window (or the durable delayed heap) may hold.
        self.window = max(1, limit // WINDOW_SHARE)
        self.low_water = self.window // LOW_WATER_SHARE
        #: Body bytes held now (ready windows, delayed heap, reserved page reads).
        self.used = 0

    def room(self) -> int:
        """Bytes of durable messages that may still be brought into memory."""
        return self.cache - self.used

    def full(self) -> bool:
        """No room for more transient messages."""
        return self.used >= self.limit

    def refusal(self, queue: str) -> BrokerError:
        """A transient queue cannot move messages to disk: at the limit it takes
        no more until consumers or expiry free some."""
        return BrokerError(
            ErrorCode.QUEUE_FULL,
            f"transient queue {queue!r} refused the message: the broker holds "
            f"{self.used} bytes of messages in memory, its memory limit is "
            f"{self.limit} (durable queues keep the excess on disk)",
        )
