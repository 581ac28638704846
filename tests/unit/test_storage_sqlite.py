"""SqliteStore's own behaviour: WAL mode, opening a file, its group commit
and the budgets of a group. What it shares with every store is in
test_store_contract.py.

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

import pytest
from corekit import msg

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


def test_parent_directory_is_created_and_wal_is_on(h: Harness) -> None:
    assert h.path.exists()
    conn = sqlite3.connect(h.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_opening_creates_every_table_once_for_core_and_task_layer(tmp_path: Path) -> None:
    path = tmp_path / "brokerd.sqlite3"
    conn = sqlite3.connect(path)  # a database holding only some of the tables
    conn.execute("CREATE TABLE exchanges (name TEXT PRIMARY KEY, type TEXT NOT NULL)")
    conn.execute("INSERT INTO exchanges VALUES ('ex', 'topic')")
    conn.commit()
    conn.close()
    SqliteStore(path).close()
    store = SqliteStore(path)  # and again: nothing is created twice
    assert store.recover(T0).exchanges == [("ex", "topic")]
    store.close()
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert tables == {
        "exchanges",
        "queues",
        "bindings",
        "messages",
        "results",
        "revoked",
        "schedules",
        "groups",
        "group_members",
    }


def test_bad_durability_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        SqliteStore(tmp_path / "x.db", durability="sometimes")
    SqliteStore(tmp_path / "y.db", durability="normal").close()


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


def test_only_commits_that_promise_durability_wait_for_the_disk(h: Harness) -> None:
    """A stored publish's confirm, or a reply sent after the commit, needs the
    rows on disk (fsync); acks, returns and expiries do not: they are written
    to the log without waiting, and the next synced commit carries them too."""
    stored = Batch()
    stored.insert(msg(1, seq=1))
    stored.confirm(object(), 1, 2, durable=True)
    assert h.commit(stored) is None
    assert (h.store.commits, h.store.synced_commits) == (1, 1)
    acked = Batch()
    acked.delete(1)
    assert h.commit(acked) is None
    assert (h.store.commits, h.store.synced_commits) == (2, 1)
    replied = Batch()
    replied.after_commit(lambda err: None)
    assert h.commit(replied) is None
    assert (h.store.commits, h.store.synced_commits) == (3, 2)
    assert h.load_ready("q", 0, 0, 10) == []  # the unsynced delete applied all the same


def test_durability_normal_never_waits_for_the_disk(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "n.db", durability="normal")
    pump = Pump()
    store.start(pump.post)
    try:
        batch = Batch()
        batch.insert(msg(1, seq=1))
        batch.confirm(object(), 1, 2, durable=True)
        out: list[BaseException | None] = []
        store.commit(batch, out.append)
        while not out:
            pump.run_one()
        assert out == [None]
        assert (store.commits, store.synced_commits) == (1, 0)
    finally:
        store.close()
