"""Argument checks shared by the client and its task layer.

A rule such as "finite" or "timezone-aware" is written once here, so it
cannot hold for ``publish(not_before=...)`` and not for
``apply_async(eta=...)``. Each check returns the normal form of what the
caller wrote or raises the error Python code expects for that mistake,
naming the argument: ``TypeError`` for the wrong kind of value,
``ValueError`` for one out of range, or the caller's own error class
(``error=``; the task layer's ``ConfigurationError``) for both.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TypeVar

__all__ = ["epoch", "positive", "seconds"]

T = TypeVar("T")


def seconds(
    name: str,
    value: object,
    *,
    allow_zero: bool = False,
    allow_timedelta: bool = False,
    error: type[Exception] | None = None,
) -> float:
    """A finite duration in seconds, as a float: above 0 (or 0 with ``allow_zero``)."""
    if allow_timedelta and isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "a number of seconds or a timedelta" if allow_timedelta else "a number of seconds"
        raise (error or TypeError)(f"{name} must be {kind}, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise (error or ValueError)(
            f"{name} must be a finite number of seconds {bound}, got {number}"
        )
    return number


def epoch(name: str, value: object) -> float:
    """A point in time as epoch seconds: a timezone-aware datetime or a finite number."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"{name} must be a timezone-aware datetime (e.g. datetime.now(timezone.utc)); "
                "a naive datetime is ambiguous"
            )
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a datetime or epoch seconds, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def positive(
    name: str,
    value: T,
    *,
    integer: bool = False,
    allow_none: bool = True,
    error: type[Exception] | None = None,
) -> T:
    """``value`` unchanged if it is a finite number above 0 (``integer``: an
    int of at least 1), or ``None`` while ``allow_none``: an option left unset."""
    if value is None and allow_none:
        return value
    if integer:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise (error or ValueError)(f"{name} must be at least 1, got {value!r}")
    elif (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise (error or ValueError)(f"{name} must be a positive number, got {value!r}")
    return value
