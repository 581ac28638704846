"""The one clock every process of a run uses.

``CLOCK_MONOTONIC`` is system-wide on Linux, so timestamps taken in the producer, the
consumer and the orchestrating parent can be subtracted from each other.
"""

from __future__ import annotations

import time


def now() -> float:
    """Seconds on the system-wide monotonic clock."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def now_ns() -> int:
    """Nanoseconds on the system-wide monotonic clock."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)
