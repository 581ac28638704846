"""Celery's rate limit strings, as slots per second.

``"10/s"``, ``"100/m"``, ``"1000/h"`` or a plain number (per second), the
forms Celery accepts. ``None``, ``0`` and ``""`` mean no limit. Anything
else is refused where it is written (the task decorator, the setting, the
control call), not when the first task would run.
"""

from __future__ import annotations

import math

__all__ = ["parse_rate"]

_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: The broker's ceiling (SPEC §14.14).
MAX_RATE = 1_000_000.0


def parse_rate(value: object) -> float | None:
    """Slots per second for a Celery-style limit, or None for no limit."""
    if isinstance(value, bool):
        raise ValueError(f"rate_limit must be like '10/s', '100/m' or a number, got {value!r}")
    if value is None or value in ("", 0):
        return None
    if isinstance(value, int | float):
        count, per = float(value), 1.0
    elif isinstance(value, str):
        text = value.strip()
        number, _, unit = text.partition("/")
        if unit and unit.strip() not in _PER:
            raise ValueError(f"rate_limit unit must be s, m or h, got {value!r}")
        try:
            count = float(number)
        except ValueError:
            raise ValueError(
                f"rate_limit must be like '10/s', '100/m' or '1000/h', got {value!r}"
            ) from None
        per = _PER[unit.strip()] if unit else 1.0
    else:
        raise ValueError(f"rate_limit must be like '10/s', '100/m' or a number, got {value!r}")
    if count == 0:
        return None
    rate = count / per
    if not math.isfinite(rate) or rate < 0 or rate > MAX_RATE:
        raise ValueError(f"rate_limit must be between 0 and {MAX_RATE:g}/s, got {value!r}")
    return rate
