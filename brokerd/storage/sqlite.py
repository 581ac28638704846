"""SQLite (WAL) storage driven by one writer thread.

Why a thread of our own instead of aiosqlite: aiosqlite hops to its thread and
back once per statement. The broker's unit of work is a batch of hundreds of
row changes, so we hop once per *group* of batches: the thread drains every
batch queued while the previous fsync ran and applies them all with
``executemany`` in a single transaction (group commit). Reads run on the same
connection in submission order, so a page load sees every row committed (or
queued) before it, which the paging logic relies on. The tables and the
statements behind each operation are in ``sql.py`` (shared with MemoryStore).
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..message import Message
from ..stats import LATENCY_BOUNDS, Buckets
from .base import Batch, Done, Loaded, MessageOps, Queried, Query, Recovered, Row, read_messages
from .errors import (
    StorageOpenError,
    empty_database,
    missing_database,
    open_error,
    writable_advice,
)
from .lock import DataDirLock
from .sql import DELAYED_SQL, READY_SQL, SCHEMA, apply_batches, query_sql
from .sql import recover as recover_database

log = logging.getLogger("brokerd.storage")


def open_database(path: Path, durability: str) -> sqlite3.Connection:
    """Open (or create) the database and prove it is writable.

    A new database is built under a temporary name and renamed into place, so
    brokerd never leaves a zero-length ``brokerd.sqlite3`` behind: finding one
    means its data was lost (a filesystem losing a file's blocks after a power
    cut), and starting an empty broker over it would hide that.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        size: int | None = path.stat().st_size
    except FileNotFoundError:
        size = None
    if size == 0:
        raise empty_database(path)
    if size is None:
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise missing_database(path, wal)
        _create(path)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            reason = f"cannot switch it to WAL mode (journal mode stays {mode})"
            raise StorageOpenError(path, reason, writable_advice(path))
        conn.execute(f"PRAGMA synchronous = {durability.upper()}")
        conn.execute("PRAGMA temp_store = MEMORY")
        # A bounded page cache keeps broker memory flat however deep queues grow.
        conn.execute("PRAGMA cache_size = -16384")
        # The commit that crosses this many WAL pages also checkpoints them into
        # the database, holding every commit queued behind it: 1000 pages (4 MiB,
        # SQLite's default) keeps that stall near one ordinary commit.
        conn.execute("PRAGMA wal_autocheckpoint = 1000")
        conn.executescript(SCHEMA)
        # A read-only file opens and reads fine; fail now, not at the first commit.
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


def _create(path: Path) -> None:
    tmp = path.with_name(path.name + ".new")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    conn = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA)
    finally:
        conn.close()
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def batch_rows(batch: Batch) -> int:
    """Rows a batch writes (per batch, counted on the writer thread)."""
    rows = 0
    for seg in batch.segments:
        if isinstance(seg, MessageOps):
            rows += len(seg.inserts) + len(seg.updates) + len(seg.deletes)
            rows += sum(len(r) for r in seg.rows.values())
        else:
            rows += 1
    return rows


#: A group commit takes queued batches up to this many body bytes or rows
#: (a single larger batch still commits, alone and whole).
GROUP_BYTES = 2 * 1024 * 1024
GROUP_ROWS = 10_000

_COMMIT = 1
_READ = 2
_STOP = 3

Job = tuple[int, Any, Any]
Post = Callable[..., Any]


class SqliteStore:
    """A ``Store`` over one SQLite database file in WAL mode."""

    def __init__(self, path: Path, *, durability: str = "full") -> None:
        if durability not in ("full", "normal"):
            raise ValueError("durability must be 'full' or 'normal'")
        self.path = path
        lock: DataDirLock | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = DataDirLock(path.parent, path)
            self._conn = open_database(path, durability)
        except (sqlite3.Error, OSError) as exc:
            if lock is not None:
                lock.release()
            raise open_error(path, exc) from exc
        self._lock = lock
        #: ``--durability full``: commits that promise durability are fsynced.
        self._full = durability == "full"
        #: What ``PRAGMA synchronous`` is set to now (FULL at open for full).
        self._synced = self._full
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._post: Post | None = None
        self.commits = 0
        #: Group commits that waited for the disk (fsync).
        self.synced_commits = 0
        #: Body bytes committed so far (the free-disk alarm's estimate between readings).
        self.committed_bytes = 0
        #: Seconds per group commit (BEGIN..COMMIT including fsync).
        self.commit_seconds = Buckets(LATENCY_BOUNDS)

    # --- start-up -----------------------------------------------------------

    def recover(self, now: float) -> Recovered:
        """Read topology and counts; make delayed messages that fell due while
        the broker was down ready. Runs before the writer thread starts.

        Raises ``StorageOpenError`` when the file turns out to be damaged."""
        try:
            return recover_database(self._conn, now)
        except (sqlite3.Error, OSError, ValueError, TypeError) as exc:
            raise open_error(self.path, exc) from exc

    def start(self, post: Post) -> None:
        """Start the writer thread; ``post`` schedules a callback on the loop
        thread (``loop.call_soon_threadsafe``)."""
        self._post = post
        self._thread = threading.Thread(target=self._run, name="brokerd-writer", daemon=True)
        self._thread.start()

    # --- Store protocol -----------------------------------------------------

    def commit(self, batch: Batch, done: Done) -> None:
        self._jobs.put((_COMMIT, batch, done))

    def load_ready(
        self,
        queue: str,
        priority: int,
        after_seq: int,
        limit: int,
        done: Loaded,
        *,
        max_bytes: int | None = None,
    ) -> None:
        params = (queue, priority, after_seq, limit)
        self._jobs.put((_READ, (READY_SQL, params, True, max_bytes), done))

    def load_delayed(
        self, after: tuple[float, int], limit: int, done: Loaded, *, max_bytes: int | None = None
    ) -> None:
        params = (after[0], after[0], after[1], limit)
        self._jobs.put((_READ, (DELAYED_SQL, params, True, max_bytes), done))

    def read(self, query: Query, params: tuple[Any, ...], done: Queried) -> None:
        sql, args = query_sql(query, params)
        self._jobs.put((_READ, (sql, args, False, None), done))

    def close(self) -> None:
        """Finish every queued job, then close the database."""
        if self._thread is not None:
            self._jobs.put((_STOP, None, None))
            self._thread.join()
            self._thread = None
        self._conn.close()
        self._lock.release()

    # --- writer thread ------------------------------------------------------

    def _run(self) -> None:
        carry: Job | None = None
        while True:
            job = carry if carry is not None else self._jobs.get()
            carry = None
            kind = job[0]
            if kind == _STOP:
                return
            if kind == _READ:
                self._read(job)
                continue
            # Group commit within a budget: one transaction's duration bounds how
            # long the confirms (and reads) queued behind it wait.
            group = [job]
            nbytes, rows = job[1].nbytes, batch_rows(job[1])
            while nbytes < GROUP_BYTES and rows < GROUP_ROWS:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt[0] != _COMMIT:
                    carry = nxt
                    break
                more_bytes, more_rows = nxt[1].nbytes, batch_rows(nxt[1])
                if nbytes + more_bytes > GROUP_BYTES or rows + more_rows > GROUP_ROWS:
                    carry = nxt
                    break
                group.append(nxt)
                nbytes += more_bytes
                rows += more_rows
            self._commit_group(group)

    def _commit_group(self, group: list[Job]) -> None:
        conn = self._conn
        error: BaseException | None = None
        started = time.perf_counter()
        try:
            # Only a group that answers a promise of durability waits for the
            # disk: the WAL is appended in order, so the next fsync makes every
            # earlier commit durable too, and the durable state is always a
            # prefix of the commits (a power cut may undo the latest acks,
            # never keep an ack whose task result was lost).
            sync = self._full and any(batch.sync for _, batch, _ in group)
            if sync != self._synced:
                conn.execute(f"PRAGMA synchronous = {'FULL' if sync else 'NORMAL'}")
                self._synced = sync
            conn.execute("BEGIN")
            apply_batches(conn, [batch for _, batch, _ in group])
            conn.execute("COMMIT")
            self.commits += 1
            if sync:
                self.synced_commits += 1
            self.committed_bytes += sum(batch.nbytes for _, batch, _ in group)
            self.commit_seconds.observe(time.perf_counter() - started)
        except BaseException as exc:  # report every failure to the waiting publishers
            log.critical("commit failed: %s", exc)
            error = exc
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        assert self._post is not None
        self._post(_finish, [done for _, _, done in group], error)

    def _read(self, job: Job) -> None:
        sql, params, as_messages, max_bytes = job[1]
        result: list[Message] | list[Row] | BaseException
        try:
            cursor = self._conn.execute(sql, params)
            # A byte-bounded read may stop before the last row: closing the
            # cursor ends the statement (and its read transaction) there.
            result = read_messages(cursor, max_bytes) if as_messages else cursor.fetchall()
            cursor.close()
        except BaseException as exc:
            log.error("read failed: %s", exc)
            result = exc
        assert self._post is not None
        self._post(job[2], result)


def _finish(callbacks: list[Done], error: BaseException | None) -> None:
    for done in callbacks:
        done(error)
