"""The core's traffic with its store: one batch per tick, then the reads the
tick asked for, and the answers that come back.

Invariants:

* Batches are handed to the store in tick order and commit in that order, so
  a connection's writes reach the disk in the order its frames arrived.
* Reads (a queue's page, a delayed load) are issued after the tick's batch,
  never in the middle of an operation: a read sees every row written before
  it. ``generation`` counts the batches handed over; a read issued at
  generation g sees the rows of every batch up to g.
* A store reports a batch *written*, then *done* (``Store.commit``). When it
  is written, its arrivals enter their queues (the broker's ``arrive``: they
  may be delivered now) and its ``on_written`` callbacks run. When it is
  done (durable: after the fsync, for a batch that promised durability), its
  publishers are answered: a publish that needed the commit is confirmed, or
  refused with ``STORAGE_FAILED`` when it failed; unroutable and
  transient-only publishes needed nothing stored and are confirmed either
  way. Then its ``on_commit`` callbacks run, then the listeners (flow control).
* A batch whose write failed is never written: its arrivals are dropped, so
  a refused publish was never delivered, unless it entered its queue before
  the write (the broker's ``deliver_before_write``): then its copies still
  ready are withdrawn, and the refusal says it may have been delivered.
  ``write_failed`` stays set from a failed write to the next good one. A
  batch whose sync failed after the write keeps its deliveries and its rows,
  and its stored publishes are refused all the same (a confirm means on
  disk), saying they may have been delivered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from brokerd_protocol import ErrorCode

from .delayed import DelayedLoad
from .message import Message
from .queues import Connection, PageRead, QueueState
from .stats import Counters
from .storage.base import Batch, Store

#: What a publish in a batch needs from the commit (``Batch.confirms``):
#: unroutable and transient-only publishes need nothing stored.
UNROUTED, IN_MEMORY, STORED = 0, 1, 2

#: (queue, the queue's epoch at publish, message): enters the queue on commit.
Arrival = tuple[QueueState, int, Message]
#: (queue, the queue's epoch at publish, message, whether the queue took it
#: into memory): entered its queue before the write; withdrawn if it fails.
Early = tuple[QueueState, int, Message, bool]
Arrive = Callable[[list[Arrival], list[Early], int, bool], None]
Paged = Callable[[QueueState, PageRead, "list[Message] | BaseException"], None]
Loaded = Callable[[DelayedLoad, "list[Message] | BaseException"], None]


class Commits:
    def __init__(
        self, store: Store, counters: Counters, *, arrive: Arrive, paged: Paged, loaded: Loaded
    ) -> None:
        self.store = store
        self.counters = counters
        self._arrive = arrive
        self._paged = paged
        self._loaded = loaded
        #: Batches handed to the store so far.
        self.generation = 0
        #: Body bytes in batches handed to the store and not yet committed.
        self.inflight_bytes = 0
        #: Called after every commit, failed or not (flow control).
        self.listeners: list[Callable[[], None]] = []
        #: The last write failed (no write has succeeded since).
        self.write_failed = False

    # --- writes ---------------------------------------------------------------

    def submit(self, batch: Batch, arrivals: list[Arrival], early: list[Early]) -> None:
        self.inflight_bytes += batch.nbytes
        self.generation = gen = self.generation + 1
        flight = _Flight(batch, arrivals, early, gen)
        self.store.commit(batch, partial(self._done, flight), partial(self._written, flight))

    def _written(self, flight: _Flight) -> None:
        flight.written = True
        self.write_failed = False
        flight.early = []
        if flight.arrivals:
            self._arrive(flight.arrivals, [], flight.generation, True)
            flight.arrivals = []
        for callback in flight.batch.on_written:
            callback(None)

    def _done(self, flight: _Flight, error: BaseException | None) -> None:
        batch = flight.batch
        if not flight.written:
            if error is None:
                self._written(flight)  # a store that reports written with done
            else:
                self.write_failed = True
                if flight.arrivals or flight.early:
                    self._arrive(flight.arrivals, flight.early, flight.generation, False)
                for callback in batch.on_written:
                    callback(error)
        self.inflight_bytes -= batch.nbytes
        if error is None and batch.first_publish:
            self.counters.publish_confirm.observe(time.perf_counter() - batch.first_publish)
        self._answer(batch, error, flight.written, bool(flight.early))
        for callback in batch.on_commit:
            callback(error)
        for listener in self.listeners:
            listener()

    def _answer(
        self, batch: Batch, error: BaseException | None, written: bool, early: bool
    ) -> None:
        """Confirm each connection's publishes in one frame, or refuse them."""
        counters = self.counters
        by_conn: dict[Connection, tuple[list[int], list[int]]] = {}
        refusal = ""
        if error is not None:
            if written:
                # Its sync failed after the write: the messages are in their
                # queues and may have been delivered, but are not known to
                # be on disk, and a confirm would say they are.
                refusal = (
                    "storage failed to sync (fsync) after the write: the message may "
                    f"have been delivered and may not survive a power loss: {error}"
                )
            elif early:
                # Some of its messages entered their queues before the write:
                # those still ready were withdrawn, others may have gone out.
                refusal = (
                    "storage failed, nothing was stored, but the message may have been "
                    f"delivered before the write failed: {error}"
                )
            else:
                # None of its messages entered a queue (the arrivals were
                # dropped), so a client that publishes it again makes no duplicate.
                refusal = f"storage failed, nothing was stored: {error}"
        for conn, seq, outcome in batch.confirms:
            if outcome == STORED and error is not None:
                counters.store_failed += 1
                if not conn.closed:
                    conn.peer.send_publish_error(seq, ErrorCode.STORAGE_FAILED, refusal)
                continue
            if outcome:
                counters.routed += 1
            if conn.closed:
                continue
            entry = by_conn.get(conn)
            if entry is None:
                entry = by_conn[conn] = ([], [])
            entry[0 if outcome else 1].append(seq)
        for conn, (routed, unroutable) in by_conn.items():
            counters.confirmed += len(routed) + len(unroutable)
            conn.peer.send_confirms(routed, unroutable)

    # --- reads, issued after the tick's batch -----------------------------------

    def read_page(self, q: QueueState) -> None:
        read = q.start_page()
        if read is None:
            return
        self.store.load_ready(
            q.name,
            read.priority,
            read.after,
            read.limit,
            lambda r: self._paged(q, read, r),
            max_bytes=read.max_bytes,
        )

    def load_delayed(self, load: DelayedLoad) -> None:
        self.store.load_delayed(
            load.after, load.limit, lambda r: self._loaded(load, r), max_bytes=load.max_bytes
        )


class _Flight:
    """A batch handed to the store, until it is done."""

    __slots__ = ("arrivals", "batch", "early", "generation", "written")

    def __init__(
        self, batch: Batch, arrivals: list[Arrival], early: list[Early], generation: int
    ) -> None:
        self.batch = batch
        self.arrivals = arrivals
        #: Its messages that entered their queues before the write (kept
        #: until the write's outcome is known).
        self.early = early
        self.generation = generation
        #: The store reported it written (its arrivals entered their queues).
        self.written = False
