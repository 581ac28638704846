"""The batch: every durable change of one event-loop tick, recorded as data.

Nothing outside ``storage/`` writes SQL. The core and the task layer call typed
methods (``insert``, ``put_exchange``, ``put_result``, ...); each records an
operation kind (``Op``) and its parameters, and a store maps every kind to its
own statements when it applies the batch. Two shapes keep the order of the
changes without giving up ``executemany``:

* row operations (messages, results, revocations, schedule rows) go into the
  current ``MessageOps`` segment, grouped per kind. A segment applies its
  message inserts, then updates, then deletes, then the other kinds in the
  order they first appeared. That order is always safe within one segment: a
  message is inserted before anything can update it, nothing touches a
  message after its delete, and the other kinds touch other tables;
* a ``Step`` (a topology change, a bulk delete) applies alone, after the
  segment before it and before the segment after it.

A batch marks itself dirty. It is created with the callback that schedules a
flush and calls it on its first change (a row, a step, a confirm, an
after-commit callback), so no caller has to remember to. Every later change
costs one flag check: inserts are on the publish hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

from ..message import Message
from .rows import Row, message_row, update_row

#: Called on the loop thread after the batch's commit (None) or its failure.
Done = Callable[[BaseException | None], None]
#: Called on the loop thread once the batch is written (before ``Done``).
Written = Callable[[], None]


class Op(IntEnum):
    """Operation kinds, with the parameters each is recorded with."""

    # Row operations: grouped per kind within a segment (executemany).
    #: ``message_row(m)``, in the column order of ``rows.INSERT_COLUMNS``.
    INSERT_MESSAGE = 1
    #: ``update_row(m)``: (queue, seq, ready_at, expires_at, attempts, headers, id).
    UPDATE_MESSAGE = 2
    #: (id,).
    DELETE_MESSAGE = 3
    #: (task_id, state, payload, expires_at, now): insert or replace, except
    #: that a non-final state never replaces an unexpired final one.
    PUT_RESULT = 4
    #: (task_id, expires_at, now): the result becomes REVOKED (empty payload)
    #: unless it is an unexpired SUCCESS or FAILURE; an unexpired REVOKED
    #: result's expiry is only lengthened.
    REVOKE_RESULT = 5
    #: (task_id, expires_at): insert, or lengthen an existing revocation.
    PUT_REVOCATION = 6
    #: (name, spec, exchange, routing_key, body, props, last_run, next_run):
    #: insert or replace; ``props`` is an opaque blob.
    PUT_SCHEDULE = 7
    #: (name, last_run, next_run).
    SCHEDULE_RAN = 8
    #: (group_id, size, joined, completer, fired, expires_at): insert or
    #: replace a group's record (``fired`` 0 or 1, ``completer`` or None).
    PUT_GROUP = 10
    #: (group_id, member_id): insert; a member already recorded stays as is.
    PUT_GROUP_MEMBER = 11
    #: (task_id, state, payload, expires_at, now): as ``PUT_RESULT``, except
    #: that nothing replaces an unexpired final result (``keep_final``: a
    #: redelivered run's result never replaces the first run's, SPEC §14.2).
    PUT_RESULT_KEEP_FINAL = 12

    # Steps: applied one at a time, in order with the segments around them.
    #: (name, type): insert or replace.
    PUT_EXCHANGE = 20
    #: (name,): the exchange and every binding to it.
    DELETE_EXCHANGE = 21
    #: (name, options as msgpack): insert or replace.
    PUT_QUEUE = 22
    #: (name,): the queue, its bindings and all its messages.
    DELETE_QUEUE = 23
    #: (queue, priority, after_seq): ready messages of that queue and priority
    #: with seq > after_seq (delayed ones stay).
    PURGE_READY = 24
    #: (queue, exchange, routing_key): insert or replace.
    PUT_BINDING = 25
    #: (queue, exchange, routing_key).
    DELETE_BINDING = 26
    #: (name,).
    DELETE_SCHEDULE = 27
    #: (now,): results with expires_at <= now.
    EXPIRE_RESULTS = 28
    #: (now,): revocations with expires_at <= now.
    EXPIRE_REVOCATIONS = 29
    #: (group_id,): the members recorded for the group (its record stays).
    DELETE_GROUP_MEMBERS = 30
    #: (task_id,): the result, whatever its state.
    DELETE_RESULT = 32
    #: (now,): groups with expires_at <= now, and their members.
    EXPIRE_GROUPS = 31
    #: (name, password_hash, tags): insert or replace a user (``tags`` a
    #: comma-separated text; the hash as ``auth.passwords`` writes it).
    PUT_USER = 40
    #: (name,): the user and every permission it holds.
    DELETE_USER = 41
    #: (username, vhost, configure, write, read): insert or replace.
    PUT_PERMISSION = 42
    #: (username, vhost).
    DELETE_PERMISSION = 43
    #: (name,): insert a vhost (brokerd/vhosts.py), if not there.
    PUT_VHOST = 44
    #: (name, prefix): the vhost, its permissions, and the results,
    #: revocations, schedules and groups whose ids start with ``prefix`` (its
    #: queues and exchanges are deleted one by one, as DeleteQueue does).
    DELETE_VHOST = 45


@dataclass(slots=True)
class MessageOps:
    """A segment of row operations: message rows in three lists (the hot
    path), other kinds grouped per kind in first-seen order."""

    inserts: list[Row] = field(default_factory=list)
    updates: list[Row] = field(default_factory=list)
    deletes: list[tuple[int]] = field(default_factory=list)
    rows: dict[Op, list[Row]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.inserts or self.updates or self.deletes or self.rows)


@dataclass(slots=True)
class Step:
    """One operation applied alone, ordered against the segments around it."""

    kind: Op
    params: Row


class Batch:
    """Everything one tick changed, in order, plus who to confirm afterwards."""

    __slots__ = (
        "_on_dirty",
        "_tail",
        "confirms",
        "dirty",
        "first_publish",
        "nbytes",
        "on_commit",
        "on_written",
        "segments",
        "sync",
    )

    def __init__(self, on_dirty: Callable[[], None] | None = None) -> None:
        #: The last segment while it takes rows; None after a step.
        self._tail: MessageOps | None = MessageOps()
        self.segments: list[MessageOps | Step] = [self._tail]
        #: (confirm target, publish seq, outcome) for publishes in this batch;
        #: the outcome says whether it routed and needs this commit (the core's
        #: UNROUTED / IN_MEMORY / STORED).
        self.confirms: list[tuple[Any, int, int]] = []
        #: Called on the loop thread once the commit is durable (None) or
        #: failed (the write or the sync after it).
        self.on_commit: list[Done] = []
        #: Called on the loop thread once the commit is written (None), or
        #: its write failed; never waits for the sync.
        self.on_written: list[Done] = []
        #: Body bytes carried, for flow control.
        self.nbytes = 0
        #: perf_counter() of the first publish in the batch (publish-to-confirm metric).
        self.first_publish = 0.0
        #: Something was recorded, and ``on_dirty`` was called for it.
        self.dirty = False
        #: Its commit answers a promise of durability (a stored publish's
        #: confirm, a reply sent after the commit), so it must reach the disk
        #: (fsync) before its confirms and ``on_commit`` run. Otherwise (acks, returns, expiries)
        #: it is written without waiting for the disk: a crash of the broker
        #: process keeps it, a power cut may undo it until the next synced commit.
        self.sync = False
        self._on_dirty = on_dirty

    def _mark_dirty(self) -> None:
        self.dirty = True
        if self._on_dirty is not None:
            self._on_dirty()

    def _open_segment(self) -> MessageOps:
        ops = self._tail = MessageOps()
        self.segments.append(ops)
        return ops

    def _row(self, kind: Op, row: Row) -> None:
        if not self.dirty:
            self._mark_dirty()
        ops = self._tail
        if ops is None:
            ops = self._open_segment()
        rows = ops.rows
        bucket = rows.get(kind)
        if bucket is None:
            bucket = rows[kind] = []
        bucket.append(row)

    def _step(self, kind: Op, params: Row) -> None:
        if not self.dirty:
            self._mark_dirty()
        self.segments.append(Step(kind, params))
        self._tail = None

    # --- messages (the hot path) --------------------------------------------

    def insert(self, m: Message) -> None:
        if not self.dirty:
            self._mark_dirty()
        ops = self._tail
        if ops is None:
            ops = self._open_segment()
        ops.inserts.append(message_row(m))
        self.nbytes += len(m.body)

    def update(self, m: Message) -> None:
        """Store ``m``'s mutable state (queue, seq, ready_at, expiry, attempts, headers)."""
        if not self.dirty:
            self._mark_dirty()
        ops = self._tail
        if ops is None:
            ops = self._open_segment()
        ops.updates.append(update_row(m))

    def delete(self, message_id: int) -> None:
        if not self.dirty:
            self._mark_dirty()
        ops = self._tail
        if ops is None:
            ops = self._open_segment()
        ops.deletes.append((message_id,))

    # --- confirms and callbacks -----------------------------------------------

    def confirm(self, target: Any, seq: int, outcome: int, *, durable: bool) -> None:
        """Confirm publish ``seq`` of ``target`` once this batch commits;
        ``durable``: the confirm promises the rows are on disk."""
        if not self.dirty:
            self._mark_dirty()
        if durable:
            self.sync = True
        self.confirms.append((target, seq, outcome))

    def after_commit(self, done: Done, *, durable: bool = True) -> None:
        """Call ``done(None)`` after the commit, ``done(error)`` if it fails.
        ``durable`` (the default): only once the batch is on disk; otherwise
        once it is written, without waiting for a sync."""
        if not self.dirty:
            self._mark_dirty()
        if durable:
            self.sync = True
            self.on_commit.append(done)
        else:
            self.on_written.append(done)

    # --- topology ---------------------------------------------------------------

    def put_exchange(self, name: str, type: str) -> None:
        self._step(Op.PUT_EXCHANGE, (name, type))

    def delete_exchange(self, name: str) -> None:
        """The exchange and every binding to it."""
        self._step(Op.DELETE_EXCHANGE, (name,))

    def put_queue(self, name: str, options: dict[str, Any]) -> None:
        self._step(Op.PUT_QUEUE, (name, msgpack.packb(options)))

    def delete_queue(self, name: str) -> None:
        """The queue, its bindings and all its messages."""
        self._step(Op.DELETE_QUEUE, (name,))

    def purge_ready(self, queue: str, priority: int, after_seq: int) -> None:
        """Ready messages of ``queue`` at ``priority`` with seq > ``after_seq``."""
        self._step(Op.PURGE_READY, (queue, priority, after_seq))

    def put_binding(self, queue: str, exchange: str, routing_key: str) -> None:
        self._step(Op.PUT_BINDING, (queue, exchange, routing_key))

    def delete_binding(self, queue: str, exchange: str, routing_key: str) -> None:
        self._step(Op.DELETE_BINDING, (queue, exchange, routing_key))

    # --- the task layer -----------------------------------------------------------

    def put_result(
        self, task_id: str, state: str, payload: bytes, expires_at: float, now: float
    ) -> None:
        """Store a result; a non-final state never replaces an unexpired final one."""
        self._row(Op.PUT_RESULT, (task_id, state, payload, expires_at, now))

    def put_result_keep_final(
        self, task_id: str, state: str, payload: bytes, expires_at: float, now: float
    ) -> None:
        """Store a result unless an unexpired final one is stored."""
        self._row(Op.PUT_RESULT_KEEP_FINAL, (task_id, state, payload, expires_at, now))

    def revoke_result(self, task_id: str, expires_at: float, now: float) -> None:
        """Record REVOKED unless the task already succeeded or failed."""
        self._row(Op.REVOKE_RESULT, (task_id, expires_at, now))

    def delete_result(self, task_id: str) -> None:
        """Forget a result, whatever its state (a step: ordered against the
        result rows before and after it)."""
        self._step(Op.DELETE_RESULT, (task_id,))

    def expire_results(self, now: float) -> None:
        self._step(Op.EXPIRE_RESULTS, (now,))

    def put_revocation(self, task_id: str, expires_at: float) -> None:
        """Revoke ``task_id`` until ``expires_at`` (a revocation only lengthens)."""
        self._row(Op.PUT_REVOCATION, (task_id, expires_at))

    def expire_revocations(self, now: float) -> None:
        self._step(Op.EXPIRE_REVOCATIONS, (now,))

    def put_schedule(
        self,
        name: str,
        spec: str,
        exchange: str,
        routing_key: str,
        body: bytes,
        props: bytes,
        last_run: float | None,
        next_run: float,
    ) -> None:
        self._row(
            Op.PUT_SCHEDULE, (name, spec, exchange, routing_key, body, props, last_run, next_run)
        )

    def schedule_ran(self, name: str, last_run: float, next_run: float) -> None:
        self._row(Op.SCHEDULE_RAN, (name, last_run, next_run))

    def delete_schedule(self, name: str) -> None:
        self._step(Op.DELETE_SCHEDULE, (name,))

    # --- users and permissions (brokerd/auth) ------------------------------------

    def put_user(self, name: str, password_hash: str, tags: str) -> None:
        self._step(Op.PUT_USER, (name, password_hash, tags))

    def delete_user(self, name: str) -> None:
        """The user and all its permissions."""
        self._step(Op.DELETE_USER, (name,))

    def put_permission(self, user: str, vhost: str, configure: str, write: str, read: str) -> None:
        self._step(Op.PUT_PERMISSION, (user, vhost, configure, write, read))

    def delete_permission(self, user: str, vhost: str) -> None:
        self._step(Op.DELETE_PERMISSION, (user, vhost))

    def put_vhost(self, name: str) -> None:
        self._step(Op.PUT_VHOST, (name,))

    def delete_vhost(self, name: str, prefix: str) -> None:
        self._step(Op.DELETE_VHOST, (name, prefix))

    def put_group(
        self,
        group_id: str,
        size: int,
        joined: int,
        completer: str | None,
        fired: bool,
        expires_at: float,
    ) -> None:
        """Record a group's state (insert or replace)."""
        self._row(Op.PUT_GROUP, (group_id, size, joined, completer, 1 if fired else 0, expires_at))

    def put_group_member(self, group_id: str, member_id: str) -> None:
        self._row(Op.PUT_GROUP_MEMBER, (group_id, member_id))

    def delete_group_members(self, group_id: str) -> None:
        """Drop the members recorded for a group (a step: ordered against the
        member rows before and after it)."""
        self._step(Op.DELETE_GROUP_MEMBERS, (group_id,))

    def expire_groups(self, now: float) -> None:
        self._step(Op.EXPIRE_GROUPS, (now,))

    # --- state ------------------------------------------------------------------------

    def has_writes(self) -> bool:
        return any(not isinstance(s, MessageOps) or bool(s) for s in self.segments)

    def __bool__(self) -> bool:
        return (
            bool(self.confirms)
            or bool(self.on_commit)
            or bool(self.on_written)
            or self.has_writes()
        )
