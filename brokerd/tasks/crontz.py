"""Crontab schedules in a time zone: wall-clock matches turned into instants.

``cron.py`` says which wall-clock minutes match; this module says *when* those
are, in a zone with daylight-saving transitions. Two rules, those of Vixie cron
(and its descendants), so that a daily job never runs zero or two times:

* **Fixed-time jobs** (neither the minute nor the hour field starts with ``*``,
  e.g. ``30 2 * * *``): a wall time that does not exist (spring forward, 02:30
  skipped) runs at the first instant after the gap, the transition itself
  (03:00 local); several skipped times run there once. A wall time that
  happens twice (fall back) runs at its first occurrence only.
* **Interval jobs** (``*/15 * * * *``, ``30 * * * *``, ``0 */2 * * *``): they run
  at every instant whose local wall time matches: a skipped hour has no runs,
  a repeated hour runs twice. So an hourly job keeps running every 3600 s of
  real time through both transitions.

``next_run(spec, zone, t)`` is the first such instant strictly after ``t``
(epoch seconds). Candidates are visited in wall-clock order; every instant a
wall time ``w`` maps to is at least ``low(w)`` (the earlier of its two PEP 495
readings), and ``low`` never decreases as ``w`` grows, so the search stops at
the first ``w`` whose ``low`` is past the best instant found. It starts at the
wall time of ``t``, moved back by the size of a fall-back transition coming
within ``_LOOKAHEAD``: only then can a later instant have an earlier wall time.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .cron import CronSpec

__all__ = ["load_zone", "next_run"]

#: Longer than any backward transition in the zone database (at most 2 h).
_LOOKAHEAD = timedelta(hours=6)
_MINUTE = timedelta(minutes=1)

#: What a zone key may look like before the file system is asked (``Europe/Berlin``,
#: ``Etc/GMT+5``, ``America/Argentina/Buenos_Aires``).
_ZONE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$")


def load_zone(key: str) -> ZoneInfo:
    """The zone named ``key`` (IANA name); ``ValueError`` naming it if unknown."""
    if len(key) > 64 or not _ZONE_KEY.match(key):
        raise ValueError(f"{key!r} is not a time zone name (e.g. 'Europe/Berlin')")
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {key!r} (an IANA name such as 'Europe/Berlin'; the broker "
            "reads the system's zone database or the tzdata package)"
        ) from None


def next_run(spec: CronSpec, zone: ZoneInfo, t: float) -> float:
    """The first instant strictly after ``t`` at which ``spec`` runs in ``zone``."""
    here = datetime.fromtimestamp(t, tz=zone)
    later = datetime.fromtimestamp(t + _LOOKAHEAD.total_seconds(), tz=zone)
    wall = here.replace(tzinfo=None, second=0, microsecond=0)
    drop = _offset(here) - _offset(later)
    if drop > timedelta(0):
        wall -= drop  # a fall back is coming: its repeated wall times are still ahead
    best = math.inf
    wall = spec.first_match(wall)
    while True:
        first = wall.replace(tzinfo=zone, fold=0).timestamp()
        second = wall.replace(tzinfo=zone, fold=1).timestamp()
        for instant in _instants(spec, zone, wall, first, second):
            if t < instant < best:
                best = instant
        if min(first, second) >= best:
            return best
        wall = spec.first_match(wall + _MINUTE)


def _offset(moment: datetime) -> timedelta:
    offset = moment.utcoffset()
    assert offset is not None  # an aware datetime in a ZoneInfo
    return offset


def _instants(
    spec: CronSpec, zone: ZoneInfo, wall: datetime, first: float, second: float
) -> tuple[float, ...]:
    """When the wall time ``wall`` runs ``spec``, given its two PEP 495 readings
    (``first``: fold=0, ``second``: fold=1); see the module docstring."""
    if first == second:
        return (first,)  # the ordinary case: the wall time happens once
    if first < second:
        # It happens twice (fall back); fold=0 is the earlier occurrence.
        return (first,) if spec.fixed_time else (first, second)
    # It does not exist (spring forward): fold=0 reads it with the offset from
    # before the gap, fold=1 with the one after, so the gap's end lies between.
    return (_transition(zone, wall, second, first),) if spec.fixed_time else ()


def _transition(zone: ZoneInfo, wall: datetime, lo: float, hi: float) -> float:
    """The first whole second in ``(lo, hi]`` whose wall time is past ``wall``:
    the end of the gap that swallowed ``wall``."""
    a, b = math.floor(lo), math.ceil(hi)
    while b - a > 1:
        mid = (a + b) // 2
        if datetime.fromtimestamp(mid, tz=zone).replace(tzinfo=None) > wall:
            b = mid
        else:
            a = mid
    return float(b)
