"""SQLite (WAL) storage driven by one writer thread.

Why a thread of our own instead of aiosqlite: aiosqlite hops to its thread and
back once per statement. The broker's unit of work is a batch of hundreds of
row changes, so we hop once per *group* of batches: the thread drains every
batch queued while the previous fsync ran and applies them all with
``executemany`` in a single transaction (group commit). Reads run on the same
connection in submission order, so a page load sees every row committed (or
queued) before it, which the paging logic relies on. The tables and the
statements behind each operation are in ``sql.py`` (shared with MemoryStore).

A group that must be durable (``--durability full`` and a batch with
``sync``) is committed in two steps, each reported to the loop as it ends:
the ``COMMIT`` writes it to the WAL (``synchronous = NORMAL``; a full disk or
an I/O error fails it here, and then nothing of it was applied or delivered),
"written" lets the broker deliver its messages; then the fsync of the WAL
(``walsync.py``), and "done" lets the confirms go out. A crash of the process
between the two keeps the group (it is in the OS's cache); a power cut may
lose it, but nobody was told it was durable. Every other group is written
only and reported once.

The fsync runs on a second thread, the syncer, so the two steps are
pipelined: while group N's fsync runs, the writer commits group N+1 (its
messages are delivered at once) and the groups that pile up meanwhile share
the syncer's next fsync. A publisher never waits for an fsync that started
before its message was written, and a busy broker pays one fsync per round
of commits rather than one per group.

Invariants of the pipeline:

* ``done`` comes in commit order for every group, synced or not: a group
  committed while earlier ones wait for their fsync hands its ``done`` to
  the syncer behind them (``_behind`` counts what the syncer still holds;
  when it is zero the writer posts at once, and nothing handed over earlier
  can still be unposted).
* One fsync covers every group the syncer took before calling it: each was
  committed (appended to the log) before it was handed over.
* ``written`` is always posted by the writer right after its ``COMMIT``, so
  deliveries never wait for the disk.
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
from .base import (
    Batch,
    Done,
    Loaded,
    MessageOps,
    Queried,
    Query,
    Recovered,
    Row,
    Written,
    read_messages,
)
from .checkpoint import WRITER_PAGES, Checkpointer
from .errors import (
    StorageOpenError,
    empty_database,
    missing_database,
    open_error,
    writable_advice,
)
from .lock import DataDirLock
from .sql import DELAYED_SQL, READY_SQL, apply_batches, create_schema, query_sql
from .sql import recover as recover_database
from .walsync import WalSync

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
        # Checkpoints run on their own thread (``checkpoint.py``); the commit
        # that crosses this many WAL pages checkpoints what that thread has not
        # copied yet (holding the commits queued behind it), so the log is
        # reused from its start rather than growing under a busy writer.
        conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_PAGES}")
        create_schema(conn)
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
        create_schema(conn)
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

#: (kind, batch or read arguments, done, written: commits only).
Job = tuple[int, Any, Any, Written | None]
Post = Callable[..., Any]


class _Synced:
    """A committed group handed to the syncer: what to report once it is on
    disk (or at once, in order, if it needs no fsync)."""

    __slots__ = ("dones", "error", "started", "sync")

    def __init__(
        self, dones: list[Done], sync: bool, error: BaseException | None, started: float
    ) -> None:
        self.dones = dones
        self.sync = sync
        self.error = error
        self.started = started


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
        #: With ``--durability full``, the fsync that makes a commit that
        #: promises durability durable; None with ``normal`` (never waits).
        self.wal: WalSync | None = None
        if durability == "full":
            try:
                self.wal = self._open_wal()
            except (sqlite3.Error, OSError) as exc:
                self._conn.close()
                lock.release()
                raise open_error(path, exc) from exc
        try:
            self.checkpointer = Checkpointer(path)
        except sqlite3.Error as exc:
            if self.wal is not None:
                self.wal.close()
            self._conn.close()
            lock.release()
            raise open_error(path, exc) from exc
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        #: Committed groups waiting for the syncer (None: stop).
        self._to_sync: queue.SimpleQueue[_Synced | None] = queue.SimpleQueue()
        self._syncer: threading.Thread | None = None
        #: Entries handed to the syncer and not yet posted (under ``_behind_lock``).
        self._behind = 0
        self._behind_lock = threading.Lock()
        self._metrics_lock = threading.Lock()
        self._post: Post | None = None
        self.commits = 0
        #: Group commits that waited for the disk (fsync).
        self.synced_commits = 0
        #: Body bytes committed so far (the free-disk alarm's estimate between readings).
        self.committed_bytes = 0
        #: Seconds per group commit (BEGIN..COMMIT, and the fsync after it).
        self.commit_seconds = Buckets(LATENCY_BOUNDS)

    @property
    def syncing(self) -> int:
        """Committed groups whose ``done`` the syncer has not posted yet."""
        with self._behind_lock:
            return self._behind

    def _open_wal(self) -> WalSync:
        """Commit with ``synchronous = NORMAL`` from now on (the fsync is
        ours, after the commit), and make the log opened so far durable:
        the log file and its directory entry."""
        self._conn.execute("PRAGMA synchronous = NORMAL")
        wal = WalSync(self.path.with_name(self.path.name + "-wal"))
        try:
            wal.sync()
            _fsync(self.path.parent)
        except BaseException:
            wal.close()
            raise
        return wal

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
        if self.wal is not None:
            self._syncer = threading.Thread(
                target=self._sync_loop, name="brokerd-syncer", daemon=True
            )
            self._syncer.start()
        self.checkpointer.start()
        self._thread = threading.Thread(target=self._run, name="brokerd-writer", daemon=True)
        self._thread.start()

    # --- Store protocol -----------------------------------------------------

    def commit(self, batch: Batch, done: Done, written: Written | None = None) -> None:
        self._jobs.put((_COMMIT, batch, done, written))

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
        self._jobs.put((_READ, (READY_SQL, params, True, max_bytes), done, None))

    def load_delayed(
        self, after: tuple[float, int], limit: int, done: Loaded, *, max_bytes: int | None = None
    ) -> None:
        params = (after[0], after[0], after[1], limit)
        self._jobs.put((_READ, (DELAYED_SQL, params, True, max_bytes), done, None))

    def read(self, query: Query, params: tuple[Any, ...], done: Queried) -> None:
        sql, args = query_sql(query, params)
        self._jobs.put((_READ, (sql, args, False, None), done, None))

    def close(self) -> None:
        """Finish every queued job, then close the database."""
        if self._thread is not None:
            self._jobs.put((_STOP, None, None, None))
            self._thread.join()
            self._thread = None
        if self._syncer is not None:
            self._to_sync.put(None)  # after every group the writer handed over
            self._syncer.join()
            self._syncer = None
        self.checkpointer.close()
        if self.wal is not None:
            self.wal.close()
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
        started = time.perf_counter()
        # Only a group that answers a promise of durability waits for the
        # disk: the WAL is appended in order, so the next fsync makes every
        # earlier commit durable too, and the durable state is always a
        # prefix of the commits (a power cut may undo the latest acks,
        # never keep an ack whose task result was lost).
        sync = self.wal is not None and any(batch.sync for _, batch, _, _ in group)
        dones = [done for _, _, done, _ in group]
        written = [w for _, _, _, w in group if w is not None]
        assert self._post is not None
        try:
            conn.execute("BEGIN")
            apply_batches(conn, [batch for _, batch, _, _ in group])
            conn.execute("COMMIT")
        except BaseException as exc:  # report every failure to the waiting publishers
            log.critical("commit failed: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._report(written=[], dones=dones, sync=False, error=exc, started=started)
            return
        self.commits += 1
        self.committed_bytes += sum(batch.nbytes for _, batch, _, _ in group)
        self.checkpointer.note(self.commits, self.committed_bytes)
        self._report(written=written, dones=dones, sync=sync, error=None, started=started)

    def _report(
        self,
        *,
        written: list[Written],
        dones: list[Done],
        sync: bool,
        error: BaseException | None,
        started: float,
    ) -> None:
        """Post ``written`` now; post ``done`` now if nothing before it waits
        for the syncer and it needs no fsync, else hand it to the syncer."""
        assert self._post is not None
        with self._behind_lock:
            direct = not sync and self._behind == 0
            if not direct:
                self._behind += 1
        if direct:
            self._observe(started)
            self._post(_finish, written, dones, error)
            return
        if written:
            # The loop delivers the group's messages while it waits for the disk.
            self._post(_finish, written, [], None)
        self._to_sync.put(_Synced(dones, sync, error, started))

    def _sync_loop(self) -> None:
        """The syncer thread: take every group handed over so far, one fsync
        for all of them if any needs it, then report them in order."""
        wal = self.wal
        assert wal is not None and self._post is not None
        while True:
            first = self._to_sync.get()
            if first is None:
                return
            taken = [first]
            stop = False
            while True:
                try:
                    more = self._to_sync.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                taken.append(more)
            error: BaseException | None = None
            if any(entry.sync for entry in taken):
                try:
                    wal.sync()
                    self.synced_commits += sum(1 for entry in taken if entry.sync)
                except BaseException as exc:
                    # Written, maybe delivered, and not known to be on disk: its
                    # confirms and durable replies fail. The rows stay applied.
                    log.critical("fsync of the write-ahead log failed after its commit: %s", exc)
                    error = exc
            for entry in taken:
                self._observe(entry.started)
                failed = entry.error if entry.error is not None else (error if entry.sync else None)
                self._post(_finish, [], entry.dones, failed)
            with self._behind_lock:
                self._behind -= len(taken)
            if stop:
                return

    def _observe(self, started: float) -> None:
        with self._metrics_lock:
            self.commit_seconds.observe(time.perf_counter() - started)

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


def _finish(written: list[Written], dones: list[Done], error: BaseException | None) -> None:
    """On the loop: report a group written (its batches in order), then done."""
    for callback in written:
        callback()
    for done in dones:
        done(error)
