"""Retry delays: exponential backoff with a cap and jitter.

``delay(n) = min(maximum, base * 2**n)`` for the n-th retry (n = 0 for the
first), then with jitter a uniform draw from ``[delay/2, delay]``. Half the
nominal delay is always kept so retries of one task really do spread out
over time (full jitter can draw ~0 and retry at once), while the random half
still breaks up a thundering herd of tasks that failed together.
"""

from __future__ import annotations

import math
import random

__all__ = ["backoff_delay"]


def backoff_delay(
    retries: int,
    base: float,
    maximum: float,
    jitter: bool,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``retries`` (0-based)."""
    if retries < 0:
        raise ValueError("retries must be >= 0")
    if not (base > 0 and maximum > 0):
        raise ValueError("base and maximum must be > 0")
    # Cap the exponent first: 2**10000 would overflow a float.
    exponent = min(retries, 62)
    delay = min(maximum, base * math.ldexp(1.0, exponent))
    if jitter:
        draw = (rng or random).uniform(0.0, delay / 2)
        delay = delay / 2 + draw
    return delay
