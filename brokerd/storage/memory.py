"""An in-memory ``Store`` with the same ordering guarantees as SQLite.

It backs unit tests of the broker core (driven by a fake clock, with no
threads) and ``--data-dir :memory:`` runs where nothing needs to survive a
restart. Callbacks are handed to ``schedule`` rather than run inline so the
core is never re-entered in the middle of its own call, as with a real store.
Every commit is a group of one batch, and is written and durable at once (as
durable as memory is): one scheduled callback reports it written, then done.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from .base import Batch, Done, Loaded, Queried, Query, Recovered, Written, read_messages
from .sql import DELAYED_SQL, READY_SQL, apply_batches, create_schema, query_sql
from .sql import recover as recover_database

Schedule = Callable[[Callable[[], None]], None]


class MemoryStore:
    def __init__(self, schedule: Schedule | None = None) -> None:
        self._pending: list[Callable[[], None]] = []
        self._schedule: Schedule = schedule or self._pending.append
        # An in-memory SQLite database gives exactly the query semantics the
        # disk store has, without a file.
        # Opened on the loop thread, closed from an executor at shutdown.
        self._conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        create_schema(self._conn)
        self.commits = 0

    def recover(self, now: float) -> Recovered:
        return recover_database(self._conn, now)

    def commit(self, batch: Batch, done: Done, written: Written | None = None) -> None:
        conn = self._conn
        error: BaseException | None = None
        try:
            conn.execute("BEGIN")
            apply_batches(conn, [batch])
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as exc:  # reported to the batch, as SqliteStore does
            error = exc
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        if error is None and written is not None:
            self._schedule(lambda: _report(written, done))
        else:
            self._schedule(lambda: done(error))

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
        cursor = self._conn.execute(READY_SQL, (queue, priority, after_seq, limit))
        rows = read_messages(cursor, max_bytes)
        cursor.close()
        self._schedule(lambda: done(rows))

    def load_delayed(
        self, after: tuple[float, int], limit: int, done: Loaded, *, max_bytes: int | None = None
    ) -> None:
        params = (after[0], after[0], after[1], limit)
        cursor = self._conn.execute(DELAYED_SQL, params)
        rows = read_messages(cursor, max_bytes)
        cursor.close()
        self._schedule(lambda: done(rows))

    def read(self, query: Query, params: tuple[Any, ...], done: Queried) -> None:
        sql, args = query_sql(query, params)
        rows = self._conn.execute(sql, args).fetchall()
        self._schedule(lambda: done(rows))

    def drain(self) -> int:
        """Run queued callbacks (tests call this to let 'I/O' complete)."""
        ran = 0
        while self._pending:
            batch, self._pending[:] = list(self._pending), []
            for cb in batch:
                cb()
                ran += 1
        return ran

    def count_rows(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def close(self) -> None:
        self._conn.close()


def _report(written: Written, done: Done) -> None:
    written()
    done(None)
