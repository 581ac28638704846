"""What the broker asks of durable storage: the ``Store`` protocol.

The core never performs I/O. It records every change of one event-loop tick
in a ``Batch`` (typed operations, no SQL); the server hands the batch to a
``Store``, which applies it (with others queued behind it) in one transaction.
A store reports each batch twice: *written* (applied and visible; the broker
delivers its messages) and *done* (durable as promised; confirms go out), so
a message whose write failed is never delivered, and a confirm still means on
disk, while delivery need not wait for the disk.
Reads are typed too: message pages (``load_ready``, ``load_delayed``) and the
task layer's ``Query`` kinds. A store maps operation and query kinds to its
own statements; tests/unit/test_store_contract.py states what every store
must do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from ..message import Message
from .batch import Batch, Done, MessageOps, Op, Step, Written
from .rows import (
    INSERT_COLUMNS,
    Row,
    message_row,
    pack_headers,
    read_messages,
    row_message,
    unpack_headers,
    update_row,
)

__all__ = [
    "INSERT_COLUMNS",
    "Batch",
    "Done",
    "Loaded",
    "MessageOps",
    "Op",
    "Queried",
    "Query",
    "QueueRecord",
    "Recovered",
    "Row",
    "Step",
    "Store",
    "Written",
    "message_row",
    "pack_headers",
    "read_messages",
    "row_message",
    "unpack_headers",
    "update_row",
]


class Query(IntEnum):
    """Read kinds beyond message pages, with their parameters and the rows
    they return (tuples, in this column order)."""

    #: () -> at most one row (earliest expires_at of any result, or None,).
    EARLIEST_RESULT_EXPIRY = 1
    #: (task_ids, now, max_payload) -> (task_id, state, payload, expires_at,
    #: size) of each of ``task_ids`` stored with expires_at > now, in no
    #: particular order; ``payload`` is None (not read) when its ``size`` in
    #: bytes is more than ``max_payload``.
    RESULTS = 2
    #: (task_ids, now) -> (task_id, state, size) of the same rows, without
    #: reading any payload: sizes are checked before payloads are read.
    RESULT_SIZES = 7
    #: () -> (task_id, expires_at) of every revocation, by expires_at.
    REVOCATIONS = 3
    #: () -> (name, spec, exchange, routing_key, body, props, last_run,
    #: next_run) of every schedule.
    SCHEDULES = 4
    #: () -> (group_id, size, joined, completer, fired, expires_at) of every
    #: group (``fired`` 0 or 1).
    GROUPS = 5
    #: () -> (group_id, member_id) of every recorded group member.
    GROUP_MEMBERS = 6
    #: () -> (name, password_hash, tags) of every user.
    USERS = 20
    #: () -> (username, vhost, configure, write, read) of every permission.
    PERMISSIONS = 21
    #: () -> (name,) of every vhost but the default "/" (which always exists).
    VHOSTS = 22


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


Loaded = Callable[[list[Message] | BaseException], None]
Queried = Callable[[list[Row] | BaseException], None]


class Store(Protocol):
    """Durable storage. All callbacks run on the event loop thread, from its
    schedule, never inside the call that submitted the operation.

    Operations complete in submission order: a read submitted after a commit
    sees that commit's rows, and one submitted before it does not.
    """

    def recover(self, now: float) -> Recovered:
        """What the store holds, for start-up; delayed messages due by
        ``now`` become ready first (seq above every stored one, in id order)."""
        ...

    def commit(self, batch: Batch, done: Done, written: Written | None = None) -> None:
        """Apply ``batch`` atomically, possibly in one transaction with the
        batches queued beside it (a group).

        ``written()`` once it is applied: later reads see it and a crash of
        the process keeps it, though a power cut may still undo it. Then
        ``done(None)`` once it is durable (on disk, if ``batch.sync`` and the
        store syncs at all). A group that applied nothing calls
        ``done(error)`` for every batch and never ``written``; a group whose
        sync failed after its write was reported calls ``done(error)`` too.
        Both come in submission order, each batch's ``written`` before its
        ``done``."""
        ...

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

    def read(self, query: Query, params: tuple[Any, ...], done: Queried) -> None:
        """Run the ``query`` read after everything submitted before it."""
        ...

    def close(self) -> None: ...
