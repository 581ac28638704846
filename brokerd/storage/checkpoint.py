"""Checkpoints of the write-ahead log on a thread of their own, off the
writer's commit path.

Why: SQLite's automatic checkpoint runs inside the ``COMMIT`` that crosses
``wal_autocheckpoint`` pages. It copies the log into the database and fsyncs
both files, so that one commit takes milliseconds instead of tens of
microseconds, and every delivery and confirm queued behind it waits: a
periodic stall (measured: every ~450 single-message commits, 1-2.3 ms against
a typical 70 us) that shows in task latency tails. Here a second connection
runs ``PRAGMA wal_checkpoint(PASSIVE)`` when the writer asks for one, while
the writer goes on committing: in WAL mode a checkpointer and a writer do
not block each other, and a passive checkpoint never waits for either.

The writer keeps its own automatic checkpoint at SQLite's 1000 pages, and
this thread runs well before that (``CHECKPOINT_COMMITS``, about 400 pages
of one-message commits). Why both: the log is only reused from its start
(instead of growing) after a checkpoint that copied *every* frame, and a
checkpoint running beside a busy writer never catches up with the frames
appended meanwhile. With this thread alone (the writer's own checkpoint
moved to 16,000 pages) the log grew to that size (measured: 68 MB under
pipelined publishing) and every fsync of a growing
file had to commit the file system's journal. So under load this thread
copies the bulk beside the writer and the writer's own checkpoint at 1000
pages copies only the rest, after which the log is reused; a lone
publisher's checkpoints (an idle writer) copy everything, here.

Invariants:

* Durability is unchanged: a checkpoint only copies committed frames into
  the database and syncs it before the log may be reused (SQLite's rules,
  the same as for the automatic checkpoint); confirms still wait for the
  fsync of the log (``walsync.py``).
* The writer asks (``note``) at most once per ``CHECKPOINT_COMMITS``
  commits or ``CHECKPOINT_BYTES`` body bytes: no wake-up per commit. Requests
  made while a checkpoint runs are merged into the next one.
* The writer's connection keeps its automatic checkpoint at
  ``WRITER_PAGES``, so the log stays bounded and is reused from its start
  however busy the writer is.
* A failed checkpoint is logged and retried at the next request: frames not
  copied yet stay in the log, where readers find them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("brokerd.storage")

#: Commits between two checkpoint requests (a one-message commit adds about
#: two pages to the log: ~400 pages, before the writer's own at 1000).
CHECKPOINT_COMMITS = 200
#: Body bytes committed between two checkpoint requests (~2 MiB of pages).
CHECKPOINT_BYTES = 1024 * 1024
#: The writer's own automatic checkpoint (SQLite's default): it copies what
#: this thread has not, and lets the log be reused from its start.
WRITER_PAGES = 1000


class Checkpointer:
    """A thread with its own connection to ``path`` that checkpoints on request."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        # Its checkpoints sync the log before and the database after copying.
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: Checkpoints run so far (frames copied or not).
        self.checkpoints = 0
        #: Frames in the log and frames copied, at the last checkpoint.
        self.last: tuple[int, int] = (0, 0)
        # The writer's counts at its last request (only the writer touches them).
        self._asked_commits = 0
        self._asked_bytes = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="brokerd-checkpointer", daemon=True)
        self._thread.start()

    def note(self, commits: int, committed_bytes: int) -> None:
        """Called by the writer after each commit with its running totals: asks
        for a checkpoint once enough was committed since the last request."""
        if (
            commits - self._asked_commits >= CHECKPOINT_COMMITS
            or committed_bytes - self._asked_bytes >= CHECKPOINT_BYTES
        ):
            self._asked_commits, self._asked_bytes = commits, committed_bytes
            self._wanted.set()

    def request(self) -> None:
        """Ask for a checkpoint now."""
        self._wanted.set()

    def close(self) -> None:
        """Stop the thread (after the checkpoint it may be running) and close."""
        if self._thread is not None:
            self._stopping = True
            self._wanted.set()
            self._thread.join()
            self._thread = None
        self._conn.close()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping:
                return
            self.checkpoint()

    def checkpoint(self) -> None:
        try:
            row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("checkpoint of the write-ahead log failed (retried later): %s", exc)
            return
        self.checkpoints += 1
        if row is not None:
            self.last = (int(row[1]), int(row[2]))
