"""Unit tests for SqliteStore, driven synchronously.

The store's writer thread hands callbacks to ``post``; here ``post`` puts them
on a queue that the test thread runs, so every callback runs on the test
thread as it would on the event loop. Waits are bounded, never timed.
"""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from brokerd.message import Message
from brokerd.storage import SqliteStore, StorageOpenError
from brokerd.storage import sqlite as sqlite_store
from brokerd.storage.base import Batch, Recovered

T0 = 1_700_000_000.0


class Pump:
    """Runs the store's posted callbacks on the test thread."""

    def __init__(self) -> None:
        self.posted: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        self.posted.put((fn, args))

    def run_one(self) -> None:
        fn, args = self.posted.get(timeout=30)
        fn(*args)


class Harness:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.pump = Pump()
        self.store = SqliteStore(path)

    def start(self) -> Harness:
        self.store.start(self.pump.post)
        return self

    def commit(self, batch: Batch) -> BaseException | None:
        out: list[BaseException | None] = []
        self.store.commit(batch, out.append)
        while not out:
            self.pump.run_one()
        return out[0]

    def load_ready(self, q: str, prio: int, after: int, limit: int) -> list[Message]:
        out: list[Any] = []
        self.store.load_ready(q, prio, after, limit, out.append)
        while not out:
            self.pump.run_one()
        assert isinstance(out[0], list)
        return out[0]

    def load_delayed(self, after: tuple[float, int], limit: int) -> list[Message]:
        out: list[Any] = []
        self.store.load_delayed(after, limit, out.append)
        while not out:
            self.pump.run_one()
        assert isinstance(out[0], list)
        return out[0]

    def reopen(self, now: float = T0) -> Recovered:
        self.store.close()
        self.pump = Pump()
        self.store = SqliteStore(self.path)
        rec = self.store.recover(now)
        self.store.start(self.pump.post)
        return rec


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "data" / "brokerd.db").start()
    try:
        yield harness
    finally:
        harness.store.close()


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


def topology_batch() -> Batch:
    b = Batch()
    b.statement("INSERT OR REPLACE INTO exchanges VALUES (?, ?)", "ex", "topic")
    b.statement(
        "INSERT OR REPLACE INTO queues VALUES (?, ?)", "q", msgpack.packb({"max_deliveries": 3})
    )
    b.statement("INSERT OR REPLACE INTO queues VALUES (?, ?)", "q2", msgpack.packb({}))
    b.statement("INSERT OR REPLACE INTO bindings VALUES (?, ?, ?)", "q", "ex", "a.*")
    return b


def test_parent_directory_is_created_and_wal_is_on(h: Harness) -> None:
    assert h.path.exists()
    conn = sqlite3.connect(h.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_bad_durability_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        SqliteStore(tmp_path / "x.db", durability="sometimes")
    SqliteStore(tmp_path / "y.db", durability="normal").close()


def test_empty_database_recovers_nothing(h: Harness) -> None:
    rec = h.reopen()
    assert rec == Recovered()


def test_commit_then_reopen_recovers_topology_and_counts(h: Harness) -> None:
    batch = topology_batch()
    for i in range(1, 6):
        batch.insert(msg(i, seq=i))
    batch.insert(msg(6, priority=3, seq=6))
    batch.insert(msg(7, "q2", seq=7))
    batch.insert(msg(8, ready_at=T0 + 100))  # delayed, not due
    assert h.commit(batch) is None
    batch2 = Batch()
    batch2.delete(1)
    m2 = msg(2, seq=2, attempts=2)
    batch2.update(m2)
    assert h.commit(batch2) is None
    rec = h.reopen(T0)
    assert rec.exchanges == [("ex", "topic")]
    assert sorted((q.name, q.options) for q in rec.queues) == [
        ("q", {"max_deliveries": 3}),
        ("q2", {}),
    ]
    assert rec.bindings == [("q", "ex", "a.*")]
    assert rec.ready_counts == {("q", 0): 4, ("q", 3): 1, ("q2", 0): 1}
    assert rec.delayed_counts == {"q": 1}
    assert rec.max_id == 8
    assert rec.max_seq == 7
    ready = h.load_ready("q", 0, 0, 100)
    assert [m.id for m in ready] == [2, 3, 4, 5]
    assert ready[0].attempts == 2  # the update survived


def test_row_round_trip(h: Harness) -> None:
    m = msg(1, seq=10, headers={"k": "v", "n": 3, "b": b"\x01"}, body=b"\x00\xffbin")
    m.expires_at = T0 + 5
    b = Batch()
    b.insert(m)
    h.commit(b)
    (got,) = h.load_ready("q", 0, 0, 10)
    for slot in Message.__slots__:
        assert getattr(got, slot) == getattr(m, slot), slot
    assert isinstance(got.body, bytes)


def test_recover_makes_due_delayed_ready_in_id_order(h: Harness) -> None:
    b = Batch()
    b.insert(msg(1, seq=1))
    b.insert(msg(5, ready_at=T0 + 10))  # due at restart
    b.insert(msg(3, ready_at=T0 + 50))  # due at restart (exactly)
    b.insert(msg(4, ready_at=T0 + 500))  # not due
    b.insert(msg(2, seq=2))
    h.commit(b)
    rec = h.reopen(T0 + 50)
    assert rec.ready_counts == {("q", 0): 4}
    assert rec.delayed_counts == {"q": 1}
    ready = h.load_ready("q", 0, 0, 100)
    assert [m.id for m in ready] == [1, 2, 3, 5]
    assert all(m.ready_at is None for m in ready)
    seqs = [m.seq for m in ready]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert rec.max_seq == seqs[-1]
    (still,) = h.load_delayed((float("-inf"), 0), 10)
    assert (still.id, still.ready_at, still.seq) == (4, T0 + 500, None)
    # Conversion is committed: a second restart sees the same state.
    rec2 = h.reopen(T0 + 50)
    assert rec2.ready_counts == rec.ready_counts
    assert rec2.max_seq == rec.max_seq


def test_load_ready_pages_by_seq(h: Harness) -> None:
    b = Batch()
    for i in range(1, 21):
        b.insert(msg(i, seq=100 + i, priority=i % 2))
    b.insert(msg(99, "other", seq=1))
    h.commit(b)
    evens = [m.id for m in h.load_ready("q", 0, 0, 100)]
    assert evens == list(range(2, 21, 2))
    page1 = h.load_ready("q", 1, 0, 4)
    assert [m.id for m in page1] == [1, 3, 5, 7]
    last_seq = page1[-1].seq
    assert last_seq is not None
    page2 = h.load_ready("q", 1, last_seq, 4)
    assert [m.id for m in page2] == [9, 11, 13, 15]
    assert h.load_ready("q", 1, 10_000, 4) == []
    assert [m.id for m in h.load_ready("other", 0, 0, 10)] == [99]


def test_load_delayed_orders_by_time_then_id(h: Harness) -> None:
    b = Batch()
    b.insert(msg(1, ready_at=T0 + 30))
    b.insert(msg(2, ready_at=T0 + 10))
    b.insert(msg(3, ready_at=T0 + 10))
    b.insert(msg(4, ready_at=T0 + 20))
    b.insert(msg(5, seq=1))  # ready: never in delayed loads
    h.commit(b)
    everything = h.load_delayed((float("-inf"), 0), 100)
    assert [m.id for m in everything] == [2, 3, 4, 1]
    assert [m.id for m in h.load_delayed((T0 + 10, 2), 2)] == [3, 4]
    assert [m.id for m in h.load_delayed((T0 + 10, 3), 100)] == [4, 1]
    assert h.load_delayed((T0 + 30, 1), 100) == []


def test_reads_see_every_commit_submitted_before_them(h: Harness) -> None:
    b = Batch()
    b.insert(msg(1, seq=1))
    dones: list[BaseException | None] = []
    loads: list[Any] = []
    h.store.commit(b, dones.append)
    h.store.load_ready("q", 0, 0, 10, loads.append)  # submitted before the commit ran
    while not loads:
        h.pump.run_one()
    assert dones == [None]  # the commit's callback came first
    assert [m.id for m in loads[0]] == [1]


def test_batches_queued_together_commit_as_one_group(tmp_path: Path) -> None:
    h = Harness(tmp_path / "g.db")  # not started: jobs queue up
    order: list[int] = []
    for i in range(1, 4):
        b = Batch()
        b.insert(msg(i, seq=i))
        h.store.commit(b, lambda err, i=i: order.append(i if err is None else -i))
    h.start()
    while len(order) < 3:
        h.pump.run_one()
    assert order == [1, 2, 3]
    assert h.store.commits == 1
    assert len(h.load_ready("q", 0, 0, 10)) == 3
    h.store.close()


def test_group_commit_takes_batches_only_up_to_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "GROUP_BYTES", 2048, raising=False)
    h = Harness(tmp_path / "g.db")  # not started: jobs queue up
    order: list[int] = []
    sizes = [1024, 1024, 1024, 1024, 4096, 10]  # the 4 KiB batch is over budget alone
    for i, size in enumerate(sizes, 1):
        b = Batch()
        b.insert(msg(i, seq=i, body=bytes(size)))
        h.store.commit(b, lambda err, i=i: order.append(i if err is None else -i))
    h.start()
    while len(order) < len(sizes):
        h.pump.run_one()
    assert order == [1, 2, 3, 4, 5, 6]  # submission order across groups
    assert h.store.commits == 4  # [1, 2] [3, 4] [5] [6]: none is split, none waits forever
    assert len(h.load_ready("q", 0, 0, 10)) == 6
    h.store.close()


def test_group_commit_takes_batches_only_up_to_its_row_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "GROUP_ROWS", 100, raising=False)
    h = Harness(tmp_path / "g.db")
    done: list[BaseException | None] = []
    for i in range(4):
        b = Batch()
        for j in range(60):  # acks: rows without bytes
            b.delete(i * 100 + j)
        h.store.commit(b, done.append)
    h.start()
    while len(done) < 4:
        h.pump.run_one()
    assert done == [None] * 4
    assert h.store.commits == 4
    h.store.close()


def test_failed_group_rolls_back_and_reports_to_every_batch(tmp_path: Path) -> None:
    h = Harness(tmp_path / "f.db")
    good = Batch()
    good.insert(msg(1, seq=1))
    h.store.commit(good, lambda err: None)
    h.start()
    h.pump.run_one()
    h.store.close()
    h = Harness(tmp_path / "f.db")
    results: list[BaseException | None] = []
    innocent = Batch()
    innocent.insert(msg(2, seq=2))
    clash = Batch()
    clash.insert(msg(1, seq=3))  # duplicate primary key
    h.store.commit(innocent, results.append)
    h.store.commit(clash, results.append)
    h.start()
    while len(results) < 2:
        h.pump.run_one()
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results)
    assert [m.id for m in h.load_ready("q", 0, 0, 10)] == [1]  # nothing of the group
    # The store stays usable after a failed group.
    retry = Batch()
    retry.insert(msg(2, seq=2))
    assert h.commit(retry) is None
    assert [m.id for m in h.load_ready("q", 0, 0, 10)] == [1, 2]
    h.store.close()


def test_statements_and_message_ops_apply_in_batch_order(h: Harness) -> None:
    b = Batch()
    b.insert(msg(1, seq=1))
    b.statement("DELETE FROM messages WHERE queue = ?", "q")  # e.g. a purge
    b.insert(msg(2, seq=2))  # published after the purge
    h.commit(b)
    assert [m.id for m in h.load_ready("q", 0, 0, 10)] == [2]


def test_close_finishes_queued_commits(tmp_path: Path) -> None:
    h = Harness(tmp_path / "c.db").start()
    b = Batch()
    b.insert(msg(1, seq=1))
    h.store.commit(b, lambda err: None)
    h.store.close()  # no waiting: close drains the queue first
    rec = h.reopen()
    assert rec.ready_counts == {("q", 0): 1}
    h.store.close()


def test_zero_length_database_is_refused_and_left_as_found(tmp_path: Path) -> None:
    path = tmp_path / "brokerd.sqlite3"
    path.touch()
    with pytest.raises(StorageOpenError, match="empty"):
        SqliteStore(path)
    assert path.stat().st_size == 0


def test_write_ahead_log_without_its_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "brokerd.sqlite3"
    Path(f"{path}-wal").write_bytes(b"x" * 4096)
    with pytest.raises(StorageOpenError, match="missing"):
        SqliteStore(path)
    assert not path.exists()


def test_new_database_appears_whole_under_its_name(tmp_path: Path) -> None:
    path = tmp_path / "brokerd.sqlite3"
    SqliteStore(path).close()
    assert path.stat().st_size > 0
    assert not (tmp_path / "brokerd.sqlite3.new").exists()
    SqliteStore(path).close()  # and opens again
