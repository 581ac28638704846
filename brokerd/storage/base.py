"""What the broker core asks of durable storage, and the batch it hands over.

The core never performs I/O. It accumulates every row change of one event-loop
tick in a ``Batch``; the server hands the batch to a ``Store``, which applies
it (with others queued behind it) in one transaction. Publisher confirms for
the batch go out only when the store reports the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from ..message import Message

#: A row of the messages table, in column order of ``INSERT_COLUMNS``.
Row = tuple[Any, ...]

INSERT_COLUMNS = (
    "id",
    "queue",
    "priority",
    "seq",
    "ready_at",
    "expires_at",
    "attempts",
    "exchange",
    "routing_key",
    "headers",
    "message_id",
    "timestamp",
    "body",
)


def pack_headers(headers: dict[str, Any] | None) -> bytes | None:
    return None if not headers else msgpack.packb(headers, use_bin_type=True)


def unpack_headers(blob: bytes | None) -> dict[str, Any] | None:
    if blob is None:
        return None
    value = msgpack.unpackb(blob, raw=False, strict_map_key=True)
    return value if isinstance(value, dict) else None


def message_row(m: Message) -> Row:
    return (
        m.id,
        m.queue,
        m.priority,
        m.seq,
        m.ready_at,
        m.expires_at,
        m.attempts,
        m.exchange,
        m.routing_key,
        pack_headers(m.headers),
        m.message_id,
        m.timestamp,
        m.body,
    )


def row_message(row: Row) -> Message:
    (id_, queue, priority, seq, ready_at, expires_at, attempts, exchange, rkey, headers,
     message_id, timestamp, body) = row  # fmt: skip
    return Message(
        id_,
        queue,
        exchange,
        rkey,
        bytes(body),
        unpack_headers(headers),
        message_id,
        priority,
        timestamp,
        expires_at,
        attempts,
        seq,
        ready_at,
    )


def read_messages(rows: Iterable[Row], max_bytes: int | None) -> list[Message]:
    """Messages from ``rows`` until their bodies add up to ``max_bytes``.

    Rows are pulled one at a time, so a store passing a live cursor stops
    reading from disk there; the row that reaches the budget is kept, so a
    read always makes progress."""
    if max_bytes is None:
        return [row_message(r) for r in rows]
    out: list[Message] = []
    total = 0
    for r in rows:
        m = row_message(r)
        out.append(m)
        total += len(m.body)
        if total >= max_bytes:
            break
    return out


def update_row(m: Message) -> Row:
    """The mutable state of a message, for the one UPDATE statement we use."""
    return (m.queue, m.seq, m.ready_at, m.expires_at, m.attempts, pack_headers(m.headers), m.id)


@dataclass(slots=True)
class MessageOps:
    """Row changes applied as inserts, then updates, then deletes.

    That order is always safe within one segment: a message is inserted before
    anything can update it, and nothing touches a message after its delete.
    """

    inserts: list[Row] = field(default_factory=list)
    updates: list[Row] = field(default_factory=list)
    deletes: list[tuple[int]] = field(default_factory=list)
    #: Rows for other tables (results, schedules), grouped by statement and
    #: applied with executemany after the message rows.
    rows: dict[str, list[Row]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.inserts or self.updates or self.deletes or self.rows)


@dataclass(slots=True)
class Statement:
    """A topology change or bulk delete; ordered against message segments."""

    sql: str
    params: tuple[Any, ...]


class Batch:
    """Everything one tick changed, in order, plus who to confirm afterwards."""

    __slots__ = ("confirms", "first_publish", "nbytes", "on_commit", "segments")

    def __init__(self) -> None:
        self.segments: list[MessageOps | Statement] = [MessageOps()]
        #: (confirm target, publish seq, outcome) for publishes in this batch;
        #: the outcome says whether it routed and needs this commit (the core's
        #: UNROUTED / IN_MEMORY / STORED).
        self.confirms: list[tuple[Any, int, int]] = []
        #: Called on the loop thread after the commit (None) or its failure.
        self.on_commit: list[Done] = []
        #: Body bytes carried, for flow control.
        self.nbytes = 0
        #: perf_counter() of the first publish in the batch (publish-to-confirm metric).
        self.first_publish = 0.0

    def _ops(self) -> MessageOps:
        last = self.segments[-1]
        if isinstance(last, MessageOps):
            return last
        ops = MessageOps()
        self.segments.append(ops)
        return ops

    def insert(self, m: Message) -> None:
        self._ops().inserts.append(message_row(m))
        self.nbytes += len(m.body)

    def update(self, m: Message) -> None:
        self._ops().updates.append(update_row(m))

    def delete(self, message_id: int) -> None:
        self._ops().deletes.append((message_id,))

    def row(self, sql: str, row: Row) -> None:
        """Queue ``row`` for ``executemany(sql, ...)`` in order with this segment."""
        rows = self._ops().rows
        bucket = rows.get(sql)
        if bucket is None:
            bucket = rows[sql] = []
        bucket.append(row)

    def statement(self, sql: str, *params: Any) -> None:
        self.segments.append(Statement(sql, params))

    def has_writes(self) -> bool:
        return any(not isinstance(s, MessageOps) or bool(s) for s in self.segments)

    def __bool__(self) -> bool:
        return bool(self.confirms) or bool(self.on_commit) or self.has_writes()


@dataclass(slots=True)
class QueueRecord:
    name: str
    options: dict[str, Any]


@dataclass(slots=True)
class Recovered:
    """What a store holds at start-up, enough to rebuild the broker's state
    without reading message bodies (those page in on demand)."""

    exchanges: list[tuple[str, str]] = field(default_factory=list)
    queues: list[QueueRecord] = field(default_factory=list)
    bindings: list[tuple[str, str, str]] = field(default_factory=list)
    #: (queue, priority) -> ready messages on disk.
    ready_counts: dict[tuple[str, int], int] = field(default_factory=dict)
    #: queue -> delayed messages on disk.
    delayed_counts: dict[str, int] = field(default_factory=dict)
    max_id: int = 0
    max_seq: int = 0


Done = Callable[[BaseException | None], None]
Loaded = Callable[[list[Message] | BaseException], None]
Queried = Callable[[list[Row] | BaseException], None]


class Store(Protocol):
    """Durable storage. All callbacks run on the event loop thread.

    Operations complete in submission order: a load submitted after a commit
    sees that commit's rows.
    """

    def recover(self, now: float) -> Recovered: ...

    def commit(self, batch: Batch, done: Done) -> None: ...

    def load_ready(
        self,
        queue: str,
        priority: int,
        after_seq: int,
        limit: int,
        done: Loaded,
        *,
        max_bytes: int | None = None,
    ) -> None:
        """Ready messages of ``queue`` at ``priority`` with seq > ``after_seq``,
        in seq order: at most ``limit`` of them, and no more once their bodies
        add up to ``max_bytes`` (the message reaching it is included, so at
        least one is returned if any exists)."""
        ...

    def load_delayed(
        self, after: tuple[float, int], limit: int, done: Loaded, *, max_bytes: int | None = None
    ) -> None:
        """Delayed messages after ``after`` in (ready_at, id) order, bounded as
        ``load_ready``."""
        ...

    def query(self, sql: str, params: tuple[Any, ...], done: Queried) -> None:
        """Run a read after everything submitted before it."""
        ...

    def close(self) -> None: ...
