"""Task states, named as Celery names them so ported code compares the same strings.

Only three are *final* (``READY_STATES``): a result in one of them never
changes again, and only they wake ``ResultWait`` on the broker.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "EXCEPTION_STATES",
    "FAILURE",
    "PENDING",
    "READY_STATES",
    "RETRY",
    "REVOKED",
    "STARTED",
    "SUCCESS",
    "UNREADY_STATES",
]

#: Unknown to the broker: not sent yet, not started, or its result expired.
PENDING: Final = "PENDING"
#: A worker began running it (recorded only with ``task_track_started``).
STARTED: Final = "STARTED"
#: It failed and was scheduled to run again; the payload holds the error.
RETRY: Final = "RETRY"
SUCCESS: Final = "SUCCESS"
FAILURE: Final = "FAILURE"
#: Revoked (``revoke()``) or expired before it ran, or terminated while running.
REVOKED: Final = "REVOKED"

READY_STATES: Final = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES: Final = frozenset({PENDING, STARTED, RETRY})
EXCEPTION_STATES: Final = frozenset({FAILURE, RETRY, REVOKED})
