"""The fsync that makes a commit durable, issued by the writer thread itself.

Why not ``PRAGMA synchronous = FULL``: then SQLite fsyncs inside ``COMMIT``,
and the broker learns that a batch was written only once it is also on disk,
so it could deliver a message only an fsync after its commit. The store
commits with ``synchronous = NORMAL`` instead (the ``COMMIT`` appends the
batch to the write-ahead log: a write error, a full disk, surfaces there),
reports the batch written, then calls ``WalSync.sync``: the same fsync of the
log that FULL issued inside ``COMMIT``, moved after it. The log is appended in
commit order, so one fsync carries every earlier commit to the disk too.

Invariants:

* On Linux ``fsync``/``fdatasync`` flush the *file* (its inode), not what was
  written through one descriptor, so an ``O_RDONLY`` descriptor of our own
  flushes what SQLite's connection wrote through its descriptor.
* ``fdatasync`` where the platform has it, as SQLite itself syncs its log on
  Linux: it flushes the data and the metadata needed to read it back (the
  file's size as the log grows), and skips timestamps, which nothing reads.
* The descriptor must name the log SQLite writes now. The log exists while a
  connection holds the database; should it be deleted and made again (a new
  inode), the next ``sync`` opens it again by name, so it never flushes a
  file SQLite no longer writes. A missing log is an error, never a no-op.
* Used from one thread at a time (the writer thread, or the opener before it
  starts).
"""

from __future__ import annotations

import os
from pathlib import Path

#: The call that carries the log to the disk (``fsync`` where there is no ``fdatasync``).
_datasync = getattr(os, "fdatasync", os.fsync)


class WalSync:
    """Keeps a descriptor of ``path`` (the ``-wal`` file) and fsyncs it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        #: Inode of the file the descriptor names (None: none open).
        self.synced_inode: int | None = None
        self._device = 0

    def sync(self) -> None:
        """fsync the log; OSError if it cannot be (EIO, a missing log, ...)."""
        st = os.stat(self.path)
        fd = self._fd
        if fd is None or st.st_ino != self.synced_inode or st.st_dev != self._device:
            self.close()
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            opened = os.fstat(fd)  # what we opened, should it change again meanwhile
            self._fd = fd
            self.synced_inode, self._device = opened.st_ino, opened.st_dev
        _datasync(fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        self.synced_inode = None
        if fd is not None:
            os.close(fd)
