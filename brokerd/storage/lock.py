"""One broker per data dir, held with an advisory lock for the process's life.

Two brokers on one SQLite file would each believe they own every queue, hand
out the same messages and overwrite each other's rows. ``flock`` is released
by the kernel when the process dies, however it dies (kill -9 included), so a
stale lock file never keeps a restarted broker out.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import StorageOpenError

LOCK_NAME = "brokerd.lock"


class DataDirLock:
    """Holds ``<dir>/brokerd.lock`` exclusively; the file names the holder's pid."""

    def __init__(self, directory: Path, database: Path) -> None:
        path = directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StorageOpenError(
                database,
                f"{directory} is in use by another brokerd (pid {holder})",
                "stop that one first, or give this one its own --data-dir",
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
