"""The free-disk alarm: stop taking publishes before the disk is full.

Like RabbitMQ's ``disk_free_limit``: when the filesystem holding the data dir
has less than ``min_free_disk`` bytes free for us, the alarm is raised and
:mod:`brokerd.flow` stops reading every connection that publishes; connections
that only consume keep acking and receiving, which is what frees space. When
free space is back at the limit the alarm clears by itself and publishers are
read again. Each change is logged once.

Free space is read with ``statvfs`` from the server's timer every
``CHECK_INTERVAL`` seconds, not per publish. Between two reads, bytes the store
commits are subtracted (twice: WAL, then database) from the last reading; when
that estimate falls below the limit the next tick reads again at once, so a
fast publisher cannot write far past the limit within one interval.

The same reading says whether the broker may deliver a message before its
batch is written (``ample``, the broker's ``deliver_before_write``): only
while the estimate leaves ``DELIVERY_MARGIN`` above the limit after the bytes
still to be written, so a write that fails for want of space has never
handed its messages out. A limit of 0 turns the alarm off, not the reading.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from .sizes import format_size

log = logging.getLogger("brokerd.diskfree")

#: Seconds between two readings of the free space when nothing suggests hurry.
CHECK_INTERVAL = 1.0
#: Free bytes beyond the limit, after the pending writes, below which every
#: delivery waits for its write again: far more than one interval's writes
#: can take on this kind of machine at the broker's flow-control limits.
DELIVERY_MARGIN = 256 * 2**20

Probe = Callable[[str], int]


def free_bytes(path: str) -> int:
    """Bytes an unprivileged process may still allocate on ``path``'s filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class DiskMonitor:
    def __init__(
        self,
        path: str,
        limit: int,
        on_change: Callable[[bool], None],
        *,
        written: Callable[[], int],
        probe: Probe = free_bytes,
    ) -> None:
        self.path = path
        self.limit = limit
        self.on_change = on_change
        #: Bytes committed so far (a counter of the store's).
        self.written = written
        self.probe = probe
        self.alarm = False
        #: Free bytes at the last reading (None before the first).
        self.free: int | None = None
        self._checked_at = -CHECK_INTERVAL
        self._written_at_check = 0
        self._probe_failing = False

    def tick(self, now: float) -> None:
        """Called by the server's timer; reads free space only when due."""
        free = self.free
        if (
            free is None
            or now - self._checked_at >= CHECK_INTERVAL
            or self._estimate(free, 0) < self.limit + DELIVERY_MARGIN
        ):
            self.check(now)

    def _estimate(self, free: int, pending: int) -> int:
        """Free bytes left once what was committed since the reading and
        ``pending`` are written (each twice: WAL, then database)."""
        return free - 2 * (self.written() - self._written_at_check + pending)

    def ample(self, pending: int) -> bool:
        """True when writing ``pending`` more bytes cannot run the disk out:
        the estimate still leaves ``DELIVERY_MARGIN`` above the limit. False
        without a good reading."""
        free = self.free
        if free is None or self._probe_failing:
            return False
        return self._estimate(free, pending) >= self.limit + DELIVERY_MARGIN

    def check(self, now: float) -> None:
        self._checked_at = now
        self._written_at_check = self.written()
        try:
            free = self.probe(self.path)
        except OSError as exc:
            if not self._probe_failing:
                self._probe_failing = True
                log.warning("cannot read the free space of %s: %s", self.path, exc)
            return
        self._probe_failing = False
        self.free = free
        raised = free < self.limit
        if raised == self.alarm:
            return
        self.alarm = raised
        if raised:
            log.warning(
                "free disk space on %s is %s, below --min-free-disk %s: publishers are "
                "blocked until space returns",
                self.path,
                format_size(free),
                format_size(self.limit),
            )
        else:
            log.info(
                "free disk space on %s is back to %s (--min-free-disk %s): publishers resume",
                self.path,
                format_size(free),
                format_size(self.limit),
            )
        self.on_change(raised)
