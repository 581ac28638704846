"""Unit tests for MemoryStore: same ordering guarantees, callbacks on drain()."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from brokerd.message import Message
from brokerd.storage import MemoryStore, Recovered
from brokerd.storage.base import Batch


def msg(id: int, seq: int | None = None, ready_at: float | None = None) -> Message:
    return Message(id, "q", "", "q", b"b%d" % id, None, None, 0, 0, None, 0, seq, ready_at)


def test_callbacks_wait_for_drain() -> None:
    store = MemoryStore()
    b = Batch()
    b.insert(msg(1, seq=1))
    done: list[BaseException | None] = []
    store.commit(b, done.append)
    assert done == []
    assert store.count_rows() == 1  # applied at once; only the callback waits
    assert store.drain() == 1
    assert done == [None]
    assert store.drain() == 0
    assert store.commits == 1


def test_reads_and_commits_complete_in_order() -> None:
    store = MemoryStore()
    events: list[Any] = []
    b = Batch()
    b.insert(msg(1, seq=1))
    b.insert(msg(2, ready_at=5.0))
    store.commit(b, lambda err: events.append("commit"))
    store.load_ready("q", 0, 0, 10, lambda r: events.append(("ready", r)))
    store.load_delayed((float("-inf"), 0), 10, lambda r: events.append(("delayed", r)))
    store.drain()
    assert events[0] == "commit"
    assert [m.id for m in events[1][1]] == [1]
    assert [m.id for m in events[2][1]] == [2]


def test_callbacks_scheduled_during_drain_also_run() -> None:
    store = MemoryStore()
    ran: list[str] = []

    def first(err: BaseException | None) -> None:
        ran.append("first")
        store.commit(Batch(), lambda e: ran.append("second"))

    store.commit(Batch(), first)
    assert store.drain() == 2
    assert ran == ["first", "second"]


def test_custom_schedule() -> None:
    scheduled: list[Callable[[], None]] = []
    store = MemoryStore(scheduled.append)
    done: list[BaseException | None] = []
    store.commit(Batch(), done.append)
    assert len(scheduled) == 1 and done == []
    scheduled[0]()
    assert done == [None]


def test_recover_is_empty_and_delete_works() -> None:
    store = MemoryStore()
    assert store.recover(0.0) == Recovered()
    b = Batch()
    b.insert(msg(1, seq=1))
    b.delete(1)
    store.commit(b, lambda e: None)
    assert store.count_rows() == 0
    store.close()
