"""MemoryStore's own behaviour: commits apply at once, callbacks wait for
``drain()`` (or the ``schedule`` it was given). What it shares with every
store is in test_store_contract.py."""

from __future__ import annotations

from collections.abc import Callable

from brokerd.message import Message
from brokerd.storage import MemoryStore
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


def test_callbacks_scheduled_during_drain_also_run() -> None:
    store = MemoryStore()
    ran: list[str] = []

    def first(err: BaseException | None) -> None:
        ran.append("first")
        store.commit(Batch(), lambda e: ran.append("second"))

    store.commit(Batch(), first)
    assert store.drain() == 2
    assert ran == ["first", "second"]


def test_callbacks_go_to_a_custom_schedule() -> None:
    scheduled: list[Callable[[], None]] = []
    store = MemoryStore(scheduled.append)
    done: list[BaseException | None] = []
    store.commit(Batch(), done.append)
    assert len(scheduled) == 1 and done == []
    scheduled[0]()
    assert done == [None]
