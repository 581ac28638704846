"""Loaded into a celery worker with ``-I crashplug``: the worker dies (SIGKILL,
pool and main process) at one point of a chord's completion, once.

``CRASH_AT=before_fire``: the completer has been told by GroupJoin that the
header is complete, and dies before the body is published. ``after_fire``:
the body was published (and the group marked fired), and the header task
dies before it is acked. Either way the header task is redelivered to
another worker. ``CRASH_MARK`` is a file created when crashing, so only the
first worker to get there dies. Each GroupFire that published the body is
recorded as a ``fired`` run.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from tutorial.runs import record

from brokerd_client.celery import chords

_fire_body = chords._fire_body


def _die_once() -> None:
    try:
        fd = os.open(os.environ["CRASH_MARK"], os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return
    os.close(fd)
    # The whole worker at once (main process and every pool child: the fleet
    # starts each worker in its own process group). Killing only the main
    # process and this child would leave the other children running; one of
    # them may already run the body just published, and the body would then
    # run twice: once there, once after its redelivery. That is a task running
    # again after its worker died, not the chord firing twice.
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _crashing_fire_body(*args: Any) -> bool:
    where = os.environ.get("CRASH_AT")
    if where == "before_fire":
        _die_once()
    fired = _fire_body(*args)
    if fired:
        record("fired", "chord")
    if where == "after_fire":
        _die_once()
    return fired


chords._fire_body = _crashing_fire_body
