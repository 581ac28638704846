"""The connections with frames queued this tick, written once per tick or
earlier when the broker asks.

Why one list for the whole server instead of a ``call_soon`` per connection:
the broker can then put on the wire, at one chosen moment, every frame it has
queued so far. It does so after delivering messages that entered their queues
before their write (``Broker.flush``), before handing the batch to the writer
thread: otherwise the deliveries wait for the next loop iteration while the
writer thread, just woken, competes with the loop for the interpreter
(W5 publish-to-deliver p50 0.33-0.35 -> 0.28-0.29 ms: docs/ARCHITECTURE.md,
"Delivery before the write").

Invariants:

* A connection is written at most once per ``drain`` and its frames keep
  their order: each write takes everything the connection queued so far.
* One ``call_soon`` per tick at most, however many connections wrote; an
  early ``drain`` leaves it scheduled, and the tick's drain then writes only
  what was queued after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Writer(Protocol):
    def write_out(self) -> None:
        """Write every frame queued so far (nothing if none or closing)."""


class Outbox:
    def __init__(self, call_soon: Callable[[Callable[[], None]], object]) -> None:
        self._call_soon = call_soon
        self._pending: list[Writer] = []
        self._scheduled = False

    def add(self, writer: Writer) -> None:
        """``writer`` queued its first frame since it was last written."""
        self._pending.append(writer)
        if not self._scheduled:
            self._scheduled = True
            self._call_soon(self._at_tick_end)

    def drain(self) -> None:
        """Write every connection that queued frames, now."""
        while self._pending:
            pending, self._pending = self._pending, []
            for writer in pending:
                writer.write_out()

    def _at_tick_end(self) -> None:
        self._scheduled = False
        self.drain()
