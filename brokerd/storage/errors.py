"""Start-up storage failures, told to an operator in one line.

A database the broker cannot use (damaged, truncated, read-only, emptied) must
stop it at start with the file's name and what to do about it, never with a
traceback and never by quietly starting an empty broker over lost data. The
command line prints ``brokerd: <StorageOpenError>`` and exits 1.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

# Primary SQLite result codes (the low byte of an extended code).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26
_PERM = 3

DAMAGED = (
    "restore it from a backup, or move it aside (with its -wal and -shm files) to start an "
    "empty broker"
)


class StorageOpenError(Exception):
    """The database at ``path`` (a file, or a store URL shown without its
    password) cannot be opened or recovered."""

    def __init__(self, path: Path | str, reason: str, advice: str) -> None:
        super().__init__(f"cannot open {path}: {reason}; {advice}")
        self.path = path
        self.reason = reason
        self.advice = advice


def open_error(path: Path, exc: BaseException) -> StorageOpenError:
    """Explain ``exc``, raised while opening or recovering ``path``."""
    if isinstance(exc, StorageOpenError):
        return exc
    where = path.parent
    writable = writable_advice(path)
    if isinstance(exc, sqlite3.Error):
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        reason = str(exc)
        if code in (_NOTADB, _CORRUPT):
            return StorageOpenError(path, reason, DAMAGED)
        if code in (_READONLY, _PERM, _CANTOPEN):
            if code == _READONLY:
                reason = "the database is read-only"
            return StorageOpenError(path, reason, writable)
        if code == _FULL:
            return StorageOpenError(path, reason, f"free disk space on {where}, then start again")
        if code in (_BUSY, _LOCKED):
            return StorageOpenError(
                path, reason, "another process holds it locked: stop it, then start again"
            )
        if code == _IOERR:
            return StorageOpenError(
                path,
                reason,
                "the disk or filesystem failed: check the system log; if the file is "
                f"damaged, {DAMAGED}",
            )
        return StorageOpenError(path, reason, f"if the file is damaged, {DAMAGED}")
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        if exc.filename is not None and Path(exc.filename) != path:
            reason = f"{exc.filename}: {reason}"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StorageOpenError(path, reason, writable)
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            return StorageOpenError(
                path, f"{where} is not a directory", "set --data-dir to a directory"
            )
        if exc.errno == errno.ENOSPC:
            return StorageOpenError(path, reason, f"free disk space on {where}, then start again")
        return StorageOpenError(path, reason, "check the data dir and the disk")
    # A row that decodes to nonsense (msgpack, options) is damage too.
    return StorageOpenError(path, f"unreadable contents ({exc})", DAMAGED)


def writable_advice(path: Path) -> str:
    return (
        f"brokerd must be able to read and write it and create files in {path.parent} (its "
        "-wal and -shm files): check the permissions and owner, and that the filesystem is "
        "mounted read-write"
    )


def empty_database(path: Path) -> StorageOpenError:
    return StorageOpenError(
        path,
        "the database file is empty (0 bytes), so the data it held is gone (brokerd never "
        "leaves it empty)",
        "restore it from a backup; to start an empty broker on purpose, delete it",
    )


def missing_database(path: Path, wal: Path) -> StorageOpenError:
    return StorageOpenError(
        path,
        f"the file is missing but its write-ahead log {wal.name} is there",
        "restore the database from a backup; to start an empty broker on purpose, move "
        "the -wal and -shm files aside",
    )
