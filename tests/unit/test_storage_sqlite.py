"""SqliteStore's own behaviour: WAL mode, opening a file, its group commit
and the budgets of a group. What it shares with every store is in
test_store_contract.py.

The store's writer thread hands callbacks to ``post``; here ``post`` puts them
on a queue that the test thread runs, so every callback runs on the test
thread as it would on the event loop. Waits are bounded, never timed.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from corekit import msg

from brokerd.message import Message
from brokerd.storage import SqliteStore, StorageOpenError
from brokerd.storage import sqlite as sqlite_store
from brokerd.storage.base import Batch, Recovered
from brokerd.storage.sql import SCHEMA, SCHEMA_VERSION
from brokerd.storage.walsync import WalSync

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
        "users",
        "permissions",
        "vhosts",
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


def count_syncs(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the store's fsyncs of its log (they still happen)."""
    assert store.wal is not None
    sync = store.wal.sync
    calls: list[int] = []

    def counted() -> None:
        calls.append(1)
        sync()

    monkeypatch.setattr(store.wal, "sync", counted)
    return calls


def test_only_commits_that_promise_durability_wait_for_the_disk(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored publish's confirm, or a reply sent after the commit, needs the
    rows on disk (fsync); acks, returns and expiries do not: they are written
    to the log without waiting, and the next synced commit carries them too."""
    syncs = count_syncs(h.store, monkeypatch)
    stored = Batch()
    stored.insert(msg(1, seq=1))
    stored.confirm(object(), 1, 2, durable=True)
    assert h.commit(stored) is None
    assert (h.store.commits, h.store.synced_commits, len(syncs)) == (1, 1, 1)
    acked = Batch()
    acked.delete(1)
    assert h.commit(acked) is None
    assert (h.store.commits, h.store.synced_commits, len(syncs)) == (2, 1, 1)
    replied = Batch()
    replied.after_commit(lambda err: None)
    assert h.commit(replied) is None
    assert (h.store.commits, h.store.synced_commits, len(syncs)) == (3, 2, 2)
    assert h.load_ready("q", 0, 0, 10) == []  # the unsynced delete applied all the same


def durable_batch(m: Message) -> Batch:
    b = Batch()
    b.insert(m)
    b.confirm(object(), 1, 2, durable=True)
    return b


def test_a_durable_commit_is_reported_written_before_its_sync_returns(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write (COMMIT to the log) is reported as soon as it is done, so the
    broker delivers the messages while the fsync runs; ``done`` (confirms)
    waits for the fsync."""
    assert h.store.wal is not None
    sync = h.store.wal.sync
    syncing = threading.Event()
    release = threading.Event()

    def held() -> None:
        syncing.set()
        assert release.wait(30)
        sync()

    monkeypatch.setattr(h.store.wal, "sync", held)
    events: list[Any] = []
    h.store.commit(
        durable_batch(msg(1, seq=1)),
        lambda e: events.append(("done", e)),
        lambda: events.append("written"),
    )
    while not events:
        h.pump.run_one()
    assert events == ["written"]
    assert syncing.wait(30)
    # Committed, visible to another connection, while the fsync has not returned.
    other = sqlite3.connect(h.path)
    try:
        assert other.execute("SELECT id FROM messages").fetchall() == [(1,)]
    finally:
        other.close()
    assert events == ["written"]
    release.set()
    while len(events) < 2:
        h.pump.run_one()
    assert events == ["written", ("done", None)]
    assert h.store.synced_commits == 1


def test_a_sync_that_fails_after_the_write_fails_done_and_the_store_goes_on(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert h.store.wal is not None
    sync = h.store.wal.sync

    def failing() -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(h.store.wal, "sync", failing)
    events: list[Any] = []
    h.store.commit(
        durable_batch(msg(1, seq=1)),
        lambda e: events.append(("done", e)),
        lambda: events.append("written"),
    )
    while len(events) < 2:
        h.pump.run_one()
    assert events[0] == "written"
    assert events[1][0] == "done" and isinstance(events[1][1], OSError)
    assert h.store.synced_commits == 0
    monkeypatch.setattr(h.store.wal, "sync", sync)
    assert h.commit(durable_batch(msg(2, seq=2))) is None
    # The write stood: the first message was applied although its sync failed.
    assert [m.id for m in h.load_ready("q", 0, 0, 10)] == [1, 2]


def test_a_failed_write_is_never_reported_written_nor_synced(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = count_syncs(h.store, monkeypatch)
    assert h.commit(durable_batch(msg(1, seq=1))) is None
    events: list[Any] = []
    h.store.commit(
        durable_batch(msg(1, seq=2)),  # duplicate primary key: the COMMIT fails
        lambda e: events.append(("done", e)),
        lambda: events.append("written"),
    )
    while not events:
        h.pump.run_one()
    assert len(events) == 1 and isinstance(events[0][1], sqlite3.IntegrityError)
    assert len(syncs) == 1  # the first commit's only


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
        assert store.wal is None  # nothing to fsync with
    finally:
        store.close()


def test_the_log_sync_follows_the_file_when_it_is_replaced(tmp_path: Path) -> None:
    """Its descriptor must name the file written now: a log deleted and made
    again (a new inode) is opened again by name before the next fsync."""
    path = tmp_path / "x.db-wal"
    path.write_bytes(b"first")
    wal = WalSync(path)
    try:
        wal.sync()
        first = wal.synced_inode
        assert first == path.stat().st_ino
        wal.sync()
        assert wal.synced_inode == first  # kept open while it is the same file
        replacement = tmp_path / "new"
        replacement.write_bytes(b"second")
        os.replace(replacement, path)
        wal.sync()
        assert wal.synced_inode == path.stat().st_ino != first
    finally:
        wal.close()


def test_the_log_sync_fails_when_the_log_is_missing(tmp_path: Path) -> None:
    wal = WalSync(tmp_path / "gone.db-wal")
    with pytest.raises(FileNotFoundError):
        wal.sync()
    wal.close()


def test_the_next_group_is_written_while_the_previous_one_is_synced(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pipelined group commit: while group 1's fsync runs, group 2 commits to
    the log (its messages may be delivered), and its fsync covers it; ``done``
    still comes in commit order, group 1's first."""
    assert h.store.wal is not None
    sync = h.store.wal.sync
    syncing = threading.Event()
    release = threading.Event()

    def held() -> None:
        syncing.set()
        assert release.wait(30)
        sync()

    monkeypatch.setattr(h.store.wal, "sync", held)
    events: list[Any] = []
    for n in (1, 2):
        h.store.commit(
            durable_batch(msg(n, seq=n)),
            lambda e, n=n: events.append(("done", n, e)),
            lambda n=n: events.append(("written", n)),
        )
        assert syncing.wait(30)
    acked = Batch()  # an unsynced group behind them waits its turn for done too
    acked.delete(1)
    h.store.commit(acked, lambda e: events.append(("done", 3, e)))
    while ("written", 2) not in events:
        fn, args = h.pump.posted.get(timeout=10)  # never reached with a blocking fsync
        fn(*args)
    assert events == [("written", 1), ("written", 2)]
    release.set()
    while len(events) < 5:
        h.pump.run_one()
    assert events[2:] == [("done", 1, None), ("done", 2, None), ("done", 3, None)]
    assert [m.id for m in h.load_ready("q", 0, 0, 10)] == [2]


def test_groups_that_wait_for_one_fsync_share_it(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Groups committed while an fsync runs are carried to the disk by the next
    single fsync, not one each."""
    assert h.store.wal is not None
    sync = h.store.wal.sync
    calls: list[int] = []
    syncing = threading.Event()
    release = threading.Event()

    def held() -> None:
        calls.append(1)
        syncing.set()
        assert release.wait(30)
        sync()

    monkeypatch.setattr(h.store.wal, "sync", held)
    done: list[int] = []
    h.store.commit(durable_batch(msg(1, seq=1)), lambda e: done.append(1))
    assert syncing.wait(30)
    for n in (2, 3, 4):
        h.store.commit(durable_batch(msg(n, seq=n)), lambda e, n=n: done.append(n))
    # The three are committed (read after them on the writer) before the fsync ends.
    out: list[Any] = []
    h.store.load_ready("q", 0, 0, 10, out.append)
    while not out:
        h.pump.run_one()
    assert [m.id for m in out[0]] == [1, 2, 3, 4]
    release.set()
    while len(done) < 4:
        h.pump.run_one()
    assert done == [1, 2, 3, 4]
    assert len(calls) == 2
    assert h.store.synced_commits == h.store.commits


def test_an_older_database_is_migrated_to_the_current_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "brokerd.sqlite3"
    conn = sqlite3.connect(path)  # a database from before users: version 0
    conn.executescript(SCHEMA)
    conn.close()
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 1
        assert conn.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0
    finally:
        conn.close()


def test_a_database_from_a_newer_brokerd_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "brokerd.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(Exception, match="newer than this brokerd knows"):
        SqliteStore(path)
