"""The broker core's test harness: a broker on a ``FakeClock`` over a store,
and a ``FakePeer`` standing in for each connection's session.

Nothing here sleeps or waits on time: the clock moves when a test calls
``advance``, and store callbacks run when it calls ``drain`` or ``settle``,
so "the commit completes" or "the page read returns" happens exactly where a
test says. Two stores, one API:

- ``Env``: a ``MemoryStore`` whose callbacks wait in a list until drained;
- ``DiskEnv``: a ``SqliteStore`` whose writer thread posts its callbacks to a
  queue that the test thread runs, as the event loop would, so all broker code
  still runs on the test thread. Waits for the writer are bounded, not timed.

``FlakyStore`` fails its next commits or reads on request, and ``msg`` builds
a message row for tests of the stores themselves.

A restart is a new broker over the same store and clock, restored from what
was committed (``Env.restart``; a ``DiskEnv`` crashes and a new one opens the
file). Test modules import from here the way the suite imports every
helper (``from corekit import Env``): pytest puts the test directory on
``sys.path``.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brokerd.broker import Broker
from brokerd.clock import FakeClock
from brokerd.memory import DEFAULT_MEMORY_LIMIT
from brokerd.message import Message
from brokerd.queues import Connection, Consumer, Delivery
from brokerd.storage import MemoryStore, SqliteStore
from brokerd.storage.base import Batch, Done, Queried, Query, Recovered, Written
from brokerd_protocol import ErrorCode

#: Past a lease deadline by more than the lease wheel's resolution (0.05 s).
PAST = 0.06


@dataclass
class Got:
    """A snapshot of one delivery as the session would have framed it."""

    consumer: int
    delivery: int
    body: bytes
    attempt: int
    redelivered: bool
    headers: dict[str, Any] | None
    priority: int
    exchange: str
    routing_key: str
    deadline: float


class FakePeer:
    """Records everything the core sends to a connection."""

    def __init__(self) -> None:
        self.writable = True
        self.got: list[Got] = []
        self.confirm_calls: list[tuple[list[int], list[int]]] = []
        self.publish_errors: list[tuple[int, ErrorCode, str]] = []
        self.cancelled: list[tuple[int, str]] = []

    def send_delivery(self, consumer: Consumer, delivery: Delivery) -> None:
        m = delivery.message
        self.got.append(
            Got(
                consumer.id,
                delivery.id,
                m.body,
                m.attempts + 1,
                m.attempts > 0,
                dict(m.headers) if m.headers else None,
                m.priority,
                m.exchange,
                m.routing_key,
                delivery.deadline,
            )
        )

    def send_confirms(self, routed: list[int], unroutable: list[int]) -> None:
        self.confirm_calls.append((list(routed), list(unroutable)))

    def send_publish_error(self, seq: int, code: ErrorCode, message: str) -> None:
        self.publish_errors.append((seq, code, message))

    def send_consumer_cancelled(self, consumer_id: int, reason: str) -> None:
        self.cancelled.append((consumer_id, reason))

    # --- for assertions --------------------------------------------------------

    @property
    def confirmed(self) -> list[int]:
        """Sequence numbers confirmed as routed, in confirm order."""
        return [s for routed, _ in self.confirm_calls for s in routed]

    @property
    def unroutable(self) -> list[int]:
        return [s for _, unr in self.confirm_calls for s in unr]

    def bodies(self) -> list[bytes]:
        return [g.body for g in self.got]

    def take(self) -> list[Got]:
        """The deliveries so far, forgotten here (the next ``take`` starts empty)."""
        got, self.got = self.got, []
        return got


class _Harness:
    """What both stores share: connections, publishes, time and settling."""

    def __init__(
        self, store: MemoryStore | SqliteStore, clock: FakeClock | None, memory_limit: int
    ) -> None:
        self.clock = clock if clock is not None else FakeClock()
        self.memory_limit = memory_limit
        self.broker = Broker(store, self.clock, memory_limit=memory_limit)
        self._seq = 0

    def drain(self) -> int:
        """Run the callbacks of store operations already submitted; how many ran."""
        raise NotImplementedError

    def connect(self) -> tuple[Connection, FakePeer]:
        peer = FakePeer()
        return self.broker.open(peer), peer

    def consuming(
        self, queue: str, prefetch: int = 10, lease: float | None = None
    ) -> tuple[Connection, FakePeer]:
        """A new connection with one consumer on ``queue``."""
        conn, peer = self.connect()
        self.broker.consume(conn, queue, prefetch, lease)
        return conn, peer

    def publish(
        self, conn: Connection, key: str, body: bytes, exchange: str = "", **props: Any
    ) -> int:
        """Publish with the next sequence number (one counter per Env); return it."""
        self._seq += 1
        self.broker.publish(conn, self._seq, exchange, key, body, props)
        return self._seq

    def settle(self, rounds: int = 1000) -> None:
        """Commit and complete every pending store operation, and what they trigger."""
        for _ in range(rounds):
            self.broker.flush()
            if not self.drain() and not self.broker.batch:
                return
        raise AssertionError("store operations did not settle")

    def advance(self, seconds: float) -> None:
        """Move the clock and run the broker's timers, as the server's tick does."""
        self.clock.advance(seconds)
        self.broker.tick()

    def stats(self, queue: str) -> dict[str, Any]:
        return self.broker.queue_stats(queue)

    def declare_with_dlq(
        self, queue: str = "q", dlq: str = "dlq", durable: bool = True, **options: Any
    ) -> None:
        """A durable queue ``dlq`` and ``queue`` dead-lettering into it."""
        self.broker.declare_queue(dlq, True, {})
        self.broker.declare_queue(queue, durable, {"dead_letter_queue": dlq, **options})


class Env(_Harness):
    """A broker on a fake clock over a ``MemoryStore`` whose callbacks wait
    until drained."""

    def __init__(
        self,
        store: MemoryStore | None = None,
        *,
        clock: FakeClock | None = None,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        recover: bool = False,
    ) -> None:
        self.store = store if store is not None else MemoryStore()
        super().__init__(self.store, clock, memory_limit)
        #: What the store held at start, when asked to recover from it.
        self.recovered: Recovered | None = None
        if recover:
            self.recovered = self.store.recover(self.clock.now())
            self.broker.restore(self.recovered)

    def drain(self) -> int:
        return self.store.drain()

    def restart(self) -> Env:
        """A new broker over this store and clock, restored from what was
        committed: whatever was not is lost, as in a crash."""
        return Env(self.store, clock=self.clock, memory_limit=self.memory_limit, recover=True)


class DiskEnv(_Harness):
    """A broker on a fake clock over a ``SqliteStore`` at ``path``, restored
    from whatever the file holds."""

    def __init__(
        self,
        path: Path,
        *,
        clock: FakeClock | None = None,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        self.path = path
        self.posted: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )
        self.store = SqliteStore(path)
        super().__init__(self.store, clock, memory_limit)
        #: What the file held at start.
        self.recovered = self.store.recover(self.clock.now())
        self.broker.restore(self.recovered)
        self.store.start(self._post)
        self.settle()

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        self.posted.put((fn, args))

    def drain(self) -> int:
        """Run posted callbacks until the writer has done everything submitted
        so far (a read queued behind it all comes back last), and the syncer
        has reported every group the writer handed it."""
        marker: list[Any] = []
        self.store.load_ready("", 0, 0, 1, marker.append)
        ran = 0
        deadline = time.monotonic() + 30
        while not marker or self.store.syncing:
            try:
                fn, args = self.posted.get(timeout=0.01)
            except queue.Empty:
                assert time.monotonic() < deadline, "the store did not finish its work"
                continue
            fn(*args)
            ran += 1
        while True:
            try:
                fn, args = self.posted.get_nowait()
            except queue.Empty:
                return ran - 1
            fn(*args)
            ran += 1

    def crash(self) -> None:
        """Stop without closing connections: only committed work survives."""
        self.store.close()


class FlakyStore(MemoryStore):
    """A ``MemoryStore`` whose next commits or reads can be made to fail,
    applying nothing, with ``error``; and whose syncs (the durability of a
    batch that promises it, ``Batch.sync``) can be held back after the write,
    or fail after it, as a disk's fsync can."""

    def __init__(self, error: BaseException | None = None) -> None:
        super().__init__()
        self.error = error if error is not None else OSError("disk on fire")
        #: How many of the next commits fail.
        self.fail_commits = 0
        #: How many of the next reads (``read``, not page loads) fail.
        self.fail_queries = 0
        #: How many of the next syncs fail (after their batch was written).
        self.fail_syncs = 0
        #: Hold syncs: a batch that promises durability is reported written
        #: and its ``done`` waits in ``held`` until ``finish_syncs``.
        self.hold_syncs = False
        self.held: list[Callable[[], None]] = []

    def commit(self, batch: Batch, done: Done, written: Written | None = None) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            error = self.error
            self._schedule(lambda: done(error))
            return
        if batch.sync and (self.fail_syncs or self.hold_syncs):
            sync_error = None
            if self.fail_syncs:
                self.fail_syncs -= 1
                sync_error = self.error
            hold = self.hold_syncs

            def synced(err: BaseException | None) -> None:
                err = err or sync_error
                if hold:
                    self.held.append(lambda: done(err))
                else:
                    done(err)

            super().commit(batch, synced, written)
            return
        super().commit(batch, done, written)

    def finish_syncs(self) -> None:
        """The held syncs complete: their ``done`` callbacks are scheduled."""
        held, self.held = self.held, []
        for report in held:
            self._schedule(report)

    def read(self, query: Query, params: tuple[Any, ...], done: Queried) -> None:
        if self.fail_queries:
            self.fail_queries -= 1
            error = self.error
            self._schedule(lambda: done(error))
            return
        super().read(query, params, done)


def msg(
    id: int,
    queue: str = "q",
    *,
    seq: int | None = None,
    priority: int = 0,
    ready_at: float | None = None,
    attempts: int = 0,
    body: bytes | None = None,
    headers: dict[str, Any] | None = None,
) -> Message:
    """A message row as the store keeps it, every field the store reads set
    from ``id`` unless given (for tests of the stores themselves)."""
    return Message(
        id,
        queue,
        "ex",
        "rk",
        body if body is not None else b"body-%d" % id,
        headers,
        f"mid-{id}",
        priority,
        1_700_000_000_000 + id,
        None,
        attempts,
        seq,
        ready_at,
    )
