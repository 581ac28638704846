"""The Batch: typed operations recorded as data, and a batch that asks for
its own flush.

Nobody outside the batch calls the broker's flush scheduling any more, so
every kind of change must ask for it, once per batch; and the rows of one
kind stay grouped in a segment, which is what lets a store apply them with
one ``executemany``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import brokerd_protocol as bp
from brokerd.broker import Broker
from brokerd.clock import FakeClock
from brokerd.errors import BrokerError
from brokerd.message import Message
from brokerd.storage import MemoryStore, Op
from brokerd.storage.base import Batch, MessageOps, Step
from brokerd.tasks import TaskExtension


def msg(id: int) -> Message:
    return Message(id, "q", "", "q", b"body", None, None, 0, 0, None, 0, id)


CHANGES: dict[str, Callable[[Batch], None]] = {
    "insert": lambda b: b.insert(msg(1)),
    "update": lambda b: b.update(msg(1)),
    "delete": lambda b: b.delete(1),
    "confirm": lambda b: b.confirm(object(), 1, 2, durable=True),
    "after_commit": lambda b: b.after_commit(lambda err: None),
    "put_exchange": lambda b: b.put_exchange("ex", "topic"),
    "delete_exchange": lambda b: b.delete_exchange("ex"),
    "put_queue": lambda b: b.put_queue("q", {}),
    "delete_queue": lambda b: b.delete_queue("q"),
    "purge_ready": lambda b: b.purge_ready("q", 0, 0),
    "put_binding": lambda b: b.put_binding("q", "ex", "k"),
    "delete_binding": lambda b: b.delete_binding("q", "ex", "k"),
    "put_result": lambda b: b.put_result("t", "SUCCESS", b"", 1.0, 0.0),
    "revoke_result": lambda b: b.revoke_result("t", 1.0, 0.0),
    "expire_results": lambda b: b.expire_results(0.0),
    "put_revocation": lambda b: b.put_revocation("t", 1.0),
    "expire_revocations": lambda b: b.expire_revocations(0.0),
    "put_schedule": lambda b: b.put_schedule("s", "every 1", "", "q", b"", b"", None, 1.0),
    "schedule_ran": lambda b: b.schedule_ran("s", 1.0, 2.0),
    "delete_schedule": lambda b: b.delete_schedule("s"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_every_kind_of_change_asks_for_a_flush_once_per_batch(change: str) -> None:
    asked: list[None] = []
    b = Batch(lambda: asked.append(None))
    assert not b.dirty and not b
    CHANGES[change](b)
    assert b.dirty and b
    assert len(asked) == 1
    for again in CHANGES.values():
        again(b)
    assert len(asked) == 1


def test_rows_are_grouped_per_kind_and_steps_split_segments_in_order() -> None:
    b = Batch()
    b.insert(msg(1))
    b.put_result("a", "SUCCESS", b"", 1.0, 0.0)
    b.delete(7)
    b.put_revocation("a", 1.0)
    b.put_result("b", "SUCCESS", b"", 1.0, 0.0)
    b.insert(msg(2))
    b.purge_ready("q", 0, 5)
    b.insert(msg(3))
    first, step, last = b.segments
    assert isinstance(first, MessageOps) and isinstance(last, MessageOps)
    assert [r[0] for r in first.inserts] == [1, 2]
    assert first.deletes == [(7,)]
    assert list(first.rows) == [Op.PUT_RESULT, Op.PUT_REVOCATION]
    assert [r[0] for r in first.rows[Op.PUT_RESULT]] == ["a", "b"]
    assert step == Step(Op.PURGE_READY, ("q", 0, 5))
    assert [r[0] for r in last.inserts] == [3]
    assert b.nbytes == 3 * len(b"body")


class Client:
    def __init__(self) -> None:
        self.replies: list[Any] = []

    def reply_ok(self, req: int, value: Any = None) -> None:
        self.replies.append(("ok", req, value))

    def reply_error(self, req: int, exc: BrokerError) -> None:
        self.replies.append(("error", req, exc.message))

    def send(self, frame: bp.Frame) -> None:
        pass


@pytest.mark.parametrize(
    "frame",
    [
        bp.ResultSet(1, "t", "SUCCESS", b"42"),
        bp.Revoke(1, ["t"]),
        bp.ScheduleSet(1, "s", "every 60", "", "q", b""),
    ],
    ids=lambda f: type(f).__name__,
)
def test_task_requests_that_write_schedule_a_flush_through_their_batch(frame: bp.Frame) -> None:
    store = MemoryStore()
    flushes: list[None] = []
    broker = Broker(store, FakeClock(), on_dirty=lambda: flushes.append(None))
    ext = TaskExtension(broker, alive=lambda c: True)
    client = Client()
    ext.handlers()[type(frame)](client, frame)
    assert len(flushes) == 1
    broker.flush()
    store.drain()
    assert [r[:2] for r in client.replies] == [("ok", 1)]


def test_an_unchanged_schedule_declaration_still_waits_for_a_flush() -> None:
    """It writes nothing, yet its reply waits for a commit: the after-commit
    callback alone must ask for the flush."""
    store = MemoryStore()
    flushes: list[None] = []
    broker = Broker(store, FakeClock(), on_dirty=lambda: flushes.append(None))
    ext = TaskExtension(broker, alive=lambda c: True)
    client = Client()
    handle = ext.handlers()[bp.ScheduleSet]
    handle(client, bp.ScheduleSet(1, "s", "every 60", "", "q", b""))
    broker.flush()
    store.drain()
    handle(client, bp.ScheduleSet(2, "s", "every 60", "", "q", b""))
    assert len(flushes) == 2
    assert not broker.batch.has_writes()
    broker.flush()
    store.drain()
    assert [r[:2] for r in client.replies] == [("ok", 1), ("ok", 2)]
