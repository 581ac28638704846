"""Five-field crontab expressions: which wall-clock minutes match.

``parse("*/15 9-17 * * mon-fri")`` gives a ``CronSpec``. ``first_match(w)`` is
the first matching minute at or after the wall-clock time ``w`` (a naive
datetime, no zone: the calendar arithmetic of every zone), and
``next_after(t)`` the first matching whole minute strictly after ``t``
(seconds since the epoch) in UTC. Turning wall times of another zone into
instants, daylight-saving transitions included, is ``crontz.py``'s concern.

Grammar, per field (minute, hour, day of month, month, day of week):

- ``*``: every value; ``*/s``: every ``s``-th value from the field's minimum;
- ``a``, ``a-b``, ``a-b/s``, ``a/s`` (= ``a-<max>/s``), and comma lists of those;
- months may be written ``jan``..``dec`` and weekdays ``sun``..``sat`` (any case);
  weekday 0 and 7 are both Sunday.

Day of month and day of week combine as in Vixie cron: if either field starts
with ``*`` the day must match both (an unrestricted field matches every day);
otherwise a day matches if *either* field matches. So ``0 0 1,15 * fri`` runs on
the 1st, the 15th and every Friday.

Every malformed expression raises ``ValueError`` naming the field and the
problem; so does one that can never match (``0 0 30 feb *``).
"""

from __future__ import annotations

import calendar
import math
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

#: (name, low, high, value names) per field, in expression order.
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, {name: i + 1 for i, name in enumerate(_MONTHS)}),
    ("day-of-week", 0, 7, {name: i for i, name in enumerate(_DAYS)}),
)

#: Longest day of each month in any year (February: leap years).
_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

#: Years searched before concluding nothing matches. Any satisfiable day
#: (29 February included) recurs within 8 years, on any weekday within 28.
_SEARCH_YEARS = 30


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A parsed expression: the allowed values of each field, sorted."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    #: 0 = Sunday .. 6 = Saturday (7 is folded into 0).
    weekdays: tuple[int, ...]
    #: True when the day-of-month / day-of-week field does not start with ``*``.
    days_restricted: bool
    weekdays_restricted: bool
    expression: str = ""
    #: True when neither the minute nor the hour field starts with ``*``: the
    #: job runs at set times of day (``30 2 * * *``), not every so often
    #: (``*/15 * * * *``, ``0 */2 * * *``). Daylight-saving transitions treat
    #: the two kinds differently, as Vixie cron does (``crontz.py``).
    fixed_time: bool = True

    def day_matches(self, year: int, month: int, day: int) -> bool:
        dom = day in self.days
        # calendar.weekday: Monday = 0; cron: Sunday = 0.
        dow = (calendar.weekday(year, month, day) + 1) % 7 in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def next_after(self, t: float) -> float:
        """The first matching whole minute strictly after ``t`` (UTC epoch seconds)."""
        start = datetime.fromtimestamp((math.floor(t / 60) + 1) * 60, tz=UTC)
        found = self.first_match(start.replace(tzinfo=None))
        return found.replace(tzinfo=UTC).timestamp()

    def first_match(self, wall: datetime) -> datetime:
        """The first matching minute at or after the naive wall time ``wall``
        (its seconds are dropped); ``ValueError`` if none comes within 30 years."""
        if wall.second or wall.microsecond:
            wall = wall.replace(second=0, microsecond=0) + timedelta(minutes=1)
        year, month, day = wall.year, wall.month, wall.day
        hour, minute = wall.hour, wall.minute
        last_year = year + _SEARCH_YEARS
        months, hours, minutes = self.months, self.hours, self.minutes
        while year <= last_year:
            if month not in months:
                i = bisect_left(months, month)
                if i == len(months):
                    year, month = year + 1, months[0]
                else:
                    month = months[i]
                day, hour, minute = 1, 0, 0
                continue
            if self.day_matches(year, month, day):
                i = bisect_left(hours, hour)
                if i < len(hours):
                    if hours[i] == hour:
                        j = bisect_left(minutes, minute)
                        if j < len(minutes):
                            return datetime(year, month, day, hour, minutes[j])
                        i += 1
                    if i < len(hours):
                        return datetime(year, month, day, hours[i], minutes[0])
            # Nothing left today: the next day, from midnight.
            day += 1
            hour = minute = 0
            if day > calendar.monthrange(year, month)[1]:
                day = 1
                month += 1
                if month > 12:
                    year, month = year + 1, 1
        raise ValueError(f"cron expression {self.expression!r} matches no time")


def parse(expr: str) -> CronSpec:
    """Parse a five-field crontab expression; ``ValueError`` if it is invalid."""
    if not isinstance(expr, str):
        raise ValueError("a cron expression must be a string")
    parts = expr.split()
    if len(parts) != 5:
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts)} in {expr!r}"
        )
    values = [_parse_field(text, *spec) for text, spec in zip(parts, _FIELDS, strict=True)]
    minutes, hours, days, months, weekdays = values
    weekdays = sorted({d % 7 for d in weekdays})
    days_restricted = not parts[2].startswith("*")
    weekdays_restricted = not parts[4].startswith("*")
    if not (days_restricted and weekdays_restricted) and not any(
        d <= _MAX_DAYS[m - 1] for m in months for d in days
    ):
        # With day-of-week alone or ANDed, the days of month must exist in
        # some allowed month; then every weekday comes round on them in time.
        raise ValueError(f"cron expression {expr!r} names no day that exists in its months")
    return CronSpec(
        tuple(minutes),
        tuple(hours),
        tuple(days),
        tuple(months),
        tuple(weekdays),
        days_restricted,
        weekdays_restricted,
        " ".join(parts),
        fixed_time=not (parts[0].startswith("*") or parts[1].startswith("*")),
    )


def _parse_field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> list[int]:
    found: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ValueError(f"{name} field {text!r} has an empty list item")
        found.update(_parse_item(item, name, low, high, names))
    return sorted(found)


def _parse_item(item: str, name: str, low: int, high: int, names: dict[str, int]) -> range:
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit():
            raise ValueError(f"{name} field: step in {item!r} must be a positive integer")
        step = int(step_text)
        if step < 1:
            raise ValueError(f"{name} field: step in {item!r} must be at least 1")
    if base == "*":
        return range(low, high + 1, step)
    first_text, dash, last_text = base.partition("-")
    first = _value(first_text, item, name, low, high, names)
    if dash:
        last = _value(last_text, item, name, low, high, names)
        if last < first:
            raise ValueError(f"{name} field: range {item!r} runs backwards")
    elif slash:
        last = high  # "a/s" means from a to the field's maximum
    else:
        last = first
    return range(first, last + 1, step)


def _value(text: str, item: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    if text.isdigit() and text.isascii():
        value = int(text)
    elif text.lower() in names:
        value = names[text.lower()]
    else:
        raise ValueError(f"{name} field: {text!r} in {item!r} is not a valid value")
    if not low <= value <= high:
        raise ValueError(f"{name} field: {value} in {item!r} is outside {low}-{high}")
    return value
