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


def test_commits_never_checkpoint_the_log_themselves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the checkpointer held, commits well past SQLite's default of 1000
    log pages still leave the database file alone (nothing copied into it
    inside a commit); once released, the checkpointer copies every frame."""
    path = tmp_path / "data" / "brokerd.db"
    store, posted = start(path)
    checkpointing = threading.Event()
    release = threading.Event()
    run = store.checkpointer.checkpoint

    def held() -> None:
        checkpointing.set()
        assert release.wait(30)
        run()

    monkeypatch.setattr(store.checkpointer, "checkpoint", held)
    try:
        db_size = path.stat().st_size
        for n in range(1, 61):  # ~6 MB of bodies: ~1500 pages of log
            commit(store, posted, big_batch(n))
        wal = path.with_name(path.name + "-wal")
        assert wal.stat().st_size > 1000 * 4096
        assert checkpointing.wait(30)  # asked for (by bytes), and held
        assert path.stat().st_size == db_size
        release.set()  # the held checkpoint runs now, after all 60 commits
        for _ in range(300):
            frames, copied = store.checkpointer.last
            if frames and frames == copied:
                break
            threading.Event().wait(0.1)  # poll: the checkpoint runs on its thread
        frames, copied = store.checkpointer.last
        assert frames > 1000 and copied == frames
        assert path.stat().st_size > db_size + 5_000_000
    finally:
        release.set()
        store.close()
    reopened = SqliteStore(path)
    try:
        rec = reopened.recover(0.0)
        assert rec.ready_counts == {("q", 0): 60}
    finally:
        reopened.close()


def test_closing_the_store_stops_the_checkpointer(tmp_path: Path) -> None:
    store, posted = start(tmp_path / "s.db")
    commit(store, posted, big_batch(1))
    thread = store.checkpointer._thread
    assert thread is not None and thread.is_alive()
    store.close()
    assert not thread.is_alive()
