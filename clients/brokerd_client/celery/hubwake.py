"""The transport's hold on a kombu hub (Celery's worker event loop): a wake-up
pipe for deliveries already read, and the end-of-turn flush of deferred acks.

Why a pipe: a blocking call on the consuming thread (a declare, a publish
waiting for its confirm, a re-consume after ``basic_qos``) reads whatever the
broker sent meanwhile, deliveries included, and keeps them in user space. The
socket then stops being readable for them, so the hub must be told another
way. ``hub.call_soon`` is not enough: it runs the callbacks at the top of the
next turn, and whatever *they* schedule with ``call_soon`` (Celery acks a
task that way) waits until the hub's ``poll`` returns, which, with the
prefetch window full and no ack sent, is only when a timer fires (up to ten
seconds). Writing a byte to our own pipe makes ``poll`` return at once; the
pipe's reader dispatches after ``poll``, exactly where ``on_readable`` does,
so the acks those tasks schedule run at the top of the very next turn.

Invariants:

* At most one wake-up byte is in flight (``_armed``): many blocking calls in a
  turn cost one write and one read.
* ``flush`` (the connection's deferred settles) is on the hub's ``on_tick``,
  which runs every turn just before ``poll``: an ack deferred during a turn is
  on the wire before the loop can block, in one frame per kind for the turn.
* Only the thread that registered (the hub's) defers; see :meth:`on_loop_thread`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["HubBinding"]


class HubBinding:
    """Registered with ``hub``: calls ``on_wake`` after :meth:`wake`, and
    ``flush`` at the end of every loop turn."""

    def __init__(self, hub: Any, on_wake: Callable[[], None], flush: Callable[[], None]) -> None:
        self.hub = hub
        self._thread = threading.get_ident()
        self._on_wake = on_wake
        self._flush = flush
        self._armed = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        hub.add_reader(self._rfd, self._woken)
        hub.on_tick.add(self._flush)

    def on_loop_thread(self) -> bool:
        """True on the thread that runs the hub (where deferring is safe: its
        ``on_tick`` will flush)."""
        return threading.get_ident() == self._thread

    def wake(self) -> None:
        """Make the hub's next ``poll`` return at once and call ``on_wake``."""
        if self._armed or self._wfd < 0:
            return
        self._armed = True
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.write(self._wfd, b"\0")

    def _woken(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.read(self._rfd, 512)
        self._armed = False
        self._on_wake()

    def close(self) -> None:
        """Leave the hub and close the pipe."""
        if self._rfd < 0:
            return
        with contextlib.suppress(Exception):
            self.hub.remove(self._rfd)
        self.detach()

    def detach(self) -> None:
        """Close the pipe without unregistering it (after fork the poller
        may be shared with the parent; a closed descriptor leaves it anyway)."""
        self.hub.on_tick.discard(self._flush)
        for fd in (self._rfd, self._wfd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._rfd = self._wfd = -1
