"""The write-ahead log is checkpointed by its own thread, never inside a commit."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from corekit import msg

from brokerd.storage import SqliteStore
from brokerd.storage import checkpoint as checkpoint_module
from brokerd.storage.base import Batch
from brokerd.storage.checkpoint import Checkpointer


def start(path: Path) -> tuple[SqliteStore, queue.SimpleQueue[tuple[Callable[..., Any], Any]]]:
    posted: queue.SimpleQueue[tuple[Callable[..., Any], Any]] = queue.SimpleQueue()
    store = SqliteStore(path)
    store.start(lambda fn, *args: posted.put((fn, args)))
    return store, posted


def commit(store: SqliteStore, posted: queue.SimpleQueue[Any], batch: Batch) -> None:
    out: list[BaseException | None] = []
    store.commit(batch, out.append)
    while not out:
        fn, args = posted.get(timeout=30)
        fn(*args)
    assert out == [None]


def big_batch(n: int) -> Batch:
    b = Batch()
    b.insert(msg(n, seq=n, body=b"x" * 100_000))
    b.confirm(object(), n, 2, durable=True)
    return b


def test_the_writer_asks_for_a_checkpoint_once_per_so_many_commits(tmp_path: Path) -> None:
    cp = Checkpointer(tmp_path / "c.db")  # not started: requests are only recorded
    try:
        wanted: list[int] = []
        for commits in range(1, 2 * checkpoint_module.CHECKPOINT_COMMITS + 1):
            cp.note(commits, 0)
            if cp._wanted.is_set():
                wanted.append(commits)
                cp._wanted.clear()
        n = checkpoint_module.CHECKPOINT_COMMITS
        assert wanted == [n, 2 * n]
    finally:
        cp.close()


def test_the_writer_asks_for_a_checkpoint_once_enough_bytes_were_committed(
    tmp_path: Path,
) -> None:
    cp = Checkpointer(tmp_path / "c.db")
    try:
        step = checkpoint_module.CHECKPOINT_BYTES // 2
        cp.note(1, step)
        assert not cp._wanted.is_set()
        cp.note(2, 2 * step)
        assert cp._wanted.is_set()
        cp._wanted.clear()
        cp.note(3, 2 * step + 1)  # counted from the last request
        assert not cp._wanted.is_set()
    finally:
        cp.close()


def hold(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """Make the checkpointer wait for ``release`` before each checkpoint."""
    checkpointing = threading.Event()
    release = threading.Event()
    run = store.checkpointer.checkpoint

    def held() -> None:
        checkpointing.set()
        assert release.wait(30)
        run()

    monkeypatch.setattr(store.checkpointer, "checkpoint", held)
    return checkpointing, release


def test_the_checkpointer_copies_the_log_off_the_commit_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits below the writer's own threshold leave the database file
    alone (nothing is copied into it inside a commit); the checkpointer,
    asked by the writer, copies every frame of the log."""
    path = tmp_path / "data" / "brokerd.db"
    store, posted = start(path)
    checkpointing, release = hold(store, monkeypatch)
    try:
        db_size = path.stat().st_size
        for n in range(1, 26):  # ~2.5 MB of bodies: ~640 pages of log
            commit(store, posted, big_batch(n))
        assert checkpointing.wait(30)  # asked for (by bytes), and held
        assert path.stat().st_size == db_size
        release.set()  # the held checkpoint runs now, after all 25 commits
        for _ in range(300):
            frames, copied = store.checkpointer.last
            if frames and frames == copied:
                break
            threading.Event().wait(0.1)  # poll: the checkpoint runs on its thread
        frames, copied = store.checkpointer.last
        assert frames > 500 and copied == frames
        assert path.stat().st_size > db_size + 2_400_000
    finally:
        release.set()
        store.close()
    reopened = SqliteStore(path)
    try:
        assert reopened.recover(0.0).ready_counts == {("q", 0): 25}
    finally:
        reopened.close()


def test_the_log_is_reused_however_far_behind_the_checkpointer_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the checkpointer stuck, the writer's own checkpoint at
    ``WRITER_PAGES`` copies the log and it is reused from its start: ~15 MB
    committed, the log file stays near 4 MB."""
    path = tmp_path / "data" / "brokerd.db"
    store, posted = start(path)
    _, release = hold(store, monkeypatch)
    wal = path.with_name(path.name + "-wal")
    try:
        largest = 0
        for n in range(1, 151):
            commit(store, posted, big_batch(n))
            largest = max(largest, wal.stat().st_size)
        assert largest < 2 * checkpoint_module.WRITER_PAGES * 4096
        assert path.stat().st_size > 14_000_000
    finally:
        release.set()
        store.close()


def test_closing_the_store_stops_the_checkpointer(tmp_path: Path) -> None:
    store, posted = start(tmp_path / "s.db")
    commit(store, posted, big_batch(1))
    thread = store.checkpointer._thread
    assert thread is not None and thread.is_alive()
    store.close()
    assert not thread.is_alive()
