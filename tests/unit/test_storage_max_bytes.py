"""Byte-bounded reads: both stores stop reading rows once the bodies read add
up to ``max_bytes``, and always return at least one row (so paging makes
progress even with no room left)."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from brokerd.message import Message
from brokerd.storage import MemoryStore, SqliteStore
from brokerd.storage.base import Batch

KIB = 1024


def msg(id: int, size: int, *, seq: int | None = None, ready_at: float | None = None) -> Message:
    return Message(id, "q", "", "q", b"x" * size, None, None, 0, 0, None, 0, seq, ready_at)


class Stores:
    """One interface over MemoryStore (drain) and SqliteStore (writer thread)."""

    def __init__(self, kind: str, path: Path) -> None:
        self.posted: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )
        self.memory: MemoryStore | None = None
        self.sqlite: SqliteStore | None = None
        if kind == "memory":
            self.memory = MemoryStore()
            self.store: MemoryStore | SqliteStore = self.memory
        else:
            self.sqlite = SqliteStore(path)
            self.sqlite.start(lambda fn, *args: self.posted.put((fn, args)))
            self.store = self.sqlite

    def wait(self, out: list[Any]) -> Any:
        while not out:
            if self.memory is not None:
                self.memory.drain()
            else:
                fn, args = self.posted.get(timeout=30)
                fn(*args)
        return out[0]

    def commit(self, *messages: Message) -> None:
        batch = Batch()
        for m in messages:
            batch.insert(m)
        out: list[Any] = []
        self.store.commit(batch, out.append)
        assert self.wait(out) is None

    def ready(self, limit: int, max_bytes: int | None) -> list[int]:
        out: list[Any] = []
        self.store.load_ready("q", 0, 0, limit, out.append, max_bytes=max_bytes)
        return [m.id for m in self.wait(out)]

    def delayed(self, limit: int, max_bytes: int | None) -> list[int]:
        out: list[Any] = []
        self.store.load_delayed((float("-inf"), 0), limit, out.append, max_bytes=max_bytes)
        return [m.id for m in self.wait(out)]


@pytest.fixture(params=["memory", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    s = Stores(request.param, tmp_path / "db.sqlite3")
    yield s
    s.store.close()


def test_load_ready_stops_once_the_bodies_read_reach_max_bytes(stores: Stores) -> None:
    stores.commit(*(msg(i, 10 * KIB, seq=i) for i in range(1, 11)))
    assert stores.ready(100, None) == list(range(1, 11))
    assert stores.ready(100, 30 * KIB) == [1, 2, 3]
    assert stores.ready(100, 25 * KIB) == [1, 2, 3]  # the row reaching the budget is kept
    assert stores.ready(2, 1024 * KIB) == [1, 2]  # the row limit still applies


def test_load_ready_returns_at_least_one_row_however_small_the_budget(stores: Stores) -> None:
    stores.commit(msg(1, 100 * KIB, seq=1), msg(2, 1, seq=2))
    assert stores.ready(100, 1) == [1]


def test_load_delayed_stops_once_the_bodies_read_reach_max_bytes(stores: Stores) -> None:
    stores.commit(*(msg(i, 10 * KIB, ready_at=1000.0 + i) for i in range(1, 6)))
    assert stores.delayed(100, 20 * KIB) == [1, 2]
    assert stores.delayed(100, 1) == [1]
    assert stores.delayed(100, None) == [1, 2, 3, 4, 5]


def test_a_read_cut_short_leaves_no_statement_open_behind_it(stores: Stores) -> None:
    """The cut-short cursor is closed: later commits and reads see the table."""
    stores.commit(*(msg(i, 10 * KIB, seq=i) for i in range(1, 6)))
    assert stores.ready(100, 1) == [1]
    stores.commit(msg(6, 10, seq=6))
    assert stores.ready(100, None) == [1, 2, 3, 4, 5, 6]
