"""Periodic schedules: ``crontab(...)``, intervals, and ``beat_schedule`` entries.

The broker keeps and fires schedules (``ScheduleSet``); this module only turns
Celery-style entries into the broker's spec strings:

* an interval (``timedelta``, or a number of seconds) -> ``"every <seconds>"``;
* ``crontab(minute=..., hour=..., day_of_week=..., day_of_month=...,
  month_of_year=...)`` -> ``"cron <m> <h> <dom> <mon> <dow>"``, evaluated by the
  broker in the app's ``timezone`` (``broker_spec`` appends the zone; UTC by
  default), daylight-saving transitions included.

Because the broker fires each due entry once and publishes the task itself,
any number of workers can declare the same schedule: there is no beat process
to keep alive and no duplicate firing when two run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

__all__ = ["ScheduleEntry", "broker_spec", "crontab", "parse_beat_schedule", "schedule_spec"]

#: Characters a crontab field may contain: digits, names, and ``* , - /``.
_FIELD_RE = re.compile(r"^[A-Za-z0-9*,/\-]+$")
_ENTRY_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options"})
_OPTION_KEYS = frozenset({"queue", "routing_key", "exchange", "priority", "expires"})


def _field(name: str, value: object) -> str:
    if isinstance(value, bool):
        raise TypeError(f"crontab {name} must be a str, int or iterable of ints, not bool")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    elif isinstance(value, Iterable):
        items = list(value)
        if not items or not all(type(v) is int for v in items):
            raise TypeError(f"crontab {name}: an iterable must hold ints, got {items!r}")
        text = ",".join(str(v) for v in sorted(set(items)))
    else:
        raise TypeError(
            f"crontab {name} must be a str, int or iterable of ints, not {type(value).__name__}"
        )
    if not text or not _FIELD_RE.match(text):
        raise ValueError(f"crontab {name}: invalid expression {value!r}")
    return text


class crontab:
    """A crontab schedule, evaluated by the broker in the app's ``timezone``.

    Fields take what a crontab line takes (``"*/15"``, ``"9-17"``,
    ``"mon-fri"``, ``"1,15"``), an int, or an iterable of ints. The broker
    validates the full grammar when the schedule is registered and the worker
    refuses to start on an invalid one.
    """

    __slots__ = ("day_of_month", "day_of_week", "hour", "minute", "month_of_year")

    def __init__(
        self,
        minute: str | int | Iterable[int] = "*",
        hour: str | int | Iterable[int] = "*",
        day_of_week: str | int | Iterable[int] = "*",
        day_of_month: str | int | Iterable[int] = "*",
        month_of_year: str | int | Iterable[int] = "*",
    ) -> None:
        self.minute = _field("minute", minute)
        self.hour = _field("hour", hour)
        self.day_of_week = _field("day_of_week", day_of_week)
        self.day_of_month = _field("day_of_month", day_of_month)
        self.month_of_year = _field("month_of_year", month_of_year)

    @property
    def spec(self) -> str:
        """The broker's spec string: ``cron m h dom mon dow``."""
        return (
            f"cron {self.minute} {self.hour} {self.day_of_month} "
            f"{self.month_of_year} {self.day_of_week}"
        )

    def __repr__(self) -> str:
        return (
            f"<crontab: {self.minute} {self.hour} {self.day_of_month} "
            f"{self.month_of_year} {self.day_of_week} (m/h/dom/mon/dow)>"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)


def _format_seconds(seconds: float) -> str:
    if seconds == int(seconds):
        return str(int(seconds))
    return repr(seconds)


def schedule_spec(schedule: object) -> str:
    """The broker spec for a ``schedule`` value of a beat entry."""
    if isinstance(schedule, crontab):
        return schedule.spec
    if isinstance(schedule, timedelta):
        seconds = schedule.total_seconds()
    elif isinstance(schedule, int | float) and not isinstance(schedule, bool):
        seconds = float(schedule)
    else:
        raise TypeError(
            "schedule must be a timedelta, a number of seconds or a crontab(...), "
            f"not {type(schedule).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0.1:
        raise ValueError(f"an interval schedule must be at least 0.1 s, got {seconds}")
    return f"every {_format_seconds(seconds)}"


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """One validated ``beat_schedule`` entry."""

    name: str
    task: str
    spec: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_crontab(self) -> bool:
        return self.spec.startswith("cron ")


def broker_spec(entry: ScheduleEntry, timezone: str) -> str:
    """The spec the broker is given for ``entry``: a crontab carries the app's
    time zone as its last word (none for UTC, as brokers before zones read it)."""
    if entry.is_crontab and timezone != "UTC":
        return f"{entry.spec} {timezone}"
    return entry.spec


def parse_beat_schedule(value: object) -> dict[str, ScheduleEntry]:
    """Validate a ``beat_schedule`` mapping; ``ValueError``/``TypeError`` name the entry."""
    if not isinstance(value, Mapping):
        raise TypeError(f"must be a dict of entries, not {type(value).__name__}")
    entries: dict[str, ScheduleEntry] = {}
    for name, entry in value.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"entry names must be non-empty strings, got {name!r}")
        if not isinstance(entry, Mapping):
            raise TypeError(f"entry {name!r} must be a dict, not {type(entry).__name__}")
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise ValueError(
                f"entry {name!r}: unknown keys {sorted(unknown)} (allowed: {sorted(_ENTRY_KEYS)})"
            )
        task = entry.get("task")
        if not isinstance(task, str) or not task:
            raise ValueError(f"entry {name!r}: 'task' must be the task's name")
        if "schedule" not in entry:
            raise ValueError(f"entry {name!r}: 'schedule' is required")
        try:
            spec = schedule_spec(entry["schedule"])
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"entry {name!r}: {exc}") from None
        args = entry.get("args", ())
        kwargs = entry.get("kwargs", {})
        options = entry.get("options", {})
        if not isinstance(args, list | tuple):
            raise TypeError(f"entry {name!r}: 'args' must be a tuple or list")
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"entry {name!r}: 'kwargs' must be a dict")
        if not isinstance(options, Mapping):
            raise TypeError(f"entry {name!r}: 'options' must be a dict")
        bad = set(options) - _OPTION_KEYS
        if bad:
            raise ValueError(
                f"entry {name!r}: unsupported options {sorted(bad)} "
                f"(allowed: {sorted(_OPTION_KEYS)})"
            )
        expires = options.get("expires")
        if expires is not None and (
            isinstance(expires, bool) or not isinstance(expires, int | float) or expires <= 0
        ):
            raise ValueError(
                f"entry {name!r}: options['expires'] must be seconds after each firing"
            )
        entries[name] = ScheduleEntry(name, task, spec, tuple(args), dict(kwargs), dict(options))
    return entries
