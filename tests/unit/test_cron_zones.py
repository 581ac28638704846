"""Crontab schedules in a time zone, across daylight-saving transitions.

The rules (``brokerd/tasks/crontz.py``, docs/tasks.md): a fixed-time job runs
once on spring-forward day (a skipped time runs when the gap ends) and once on
fall-back day (a repeated time runs at its first occurrence); an interval job
runs at every instant whose wall time matches, so an hourly job keeps a
3600 s rhythm. Checked directly, against a minute-by-minute reference model,
and through the broker's schedules on a fake clock (restart included).
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from brokerd.tasks import cron, crontz
from brokerd.tasks.schedules import Cron, parse_spec

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

# 2026's transitions: Berlin springs forward 29 March 02:00 -> 03:00 and falls back
# 25 October 03:00 -> 02:00 (02:xx twice); New York 8 March 02:00 -> 03:00 and
# 1 November 02:00 -> 01:00 (01:xx twice).
TRANSITIONS = [
    (BERLIN, date(2026, 3, 29)),
    (BERLIN, date(2026, 10, 25)),
    (NEW_YORK, date(2026, 3, 8)),
    (NEW_YORK, date(2026, 11, 1)),
]


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def local(zone: ZoneInfo, t: float) -> str:
    return datetime.fromtimestamp(t, tz=zone).isoformat(sep=" ")


def runs_between(expr: str, zone: ZoneInfo, start: float, end: float) -> list[float]:
    spec = cron.parse(expr)
    out: list[float] = []
    t = start
    while True:
        t = crontz.next_run(spec, zone, t)
        if t >= end:
            return out
        out.append(t)


def day_bounds(zone: ZoneInfo, day: date) -> tuple[float, float]:
    """[local midnight, next local midnight) of ``day`` as instants."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()
    nxt = day + timedelta(days=1)
    return start, datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).timestamp()


def local_days(zone: ZoneInfo, instants: list[float]) -> Counter[date]:
    return Counter(datetime.fromtimestamp(t, tz=zone).date() for t in instants)


# --- the rules, directly ---------------------------------------------------------------


def test_a_skipped_0230_runs_once_when_the_gap_ends_in_berlin() -> None:
    t = utc(2026, 3, 28, 12)
    got = [local(BERLIN, x) for x in runs_between("30 2 * * *", BERLIN, t, t + 3 * 86400)]
    assert got == [
        "2026-03-29 03:00:00+02:00",  # 02:30 does not exist: the first instant after the gap
        "2026-03-30 02:30:00+02:00",
        "2026-03-31 02:30:00+02:00",
    ]


def test_a_repeated_0230_runs_once_at_its_first_occurrence_in_berlin() -> None:
    t = utc(2026, 10, 24, 12)
    got = [local(BERLIN, x) for x in runs_between("30 2 * * *", BERLIN, t, t + 3 * 86400)]
    assert got == [
        "2026-10-25 02:30:00+02:00",  # summer time: the first of the two 02:30s
        "2026-10-26 02:30:00+01:00",
        "2026-10-27 02:30:00+01:00",
    ]


def test_new_york_skips_0230_in_march_and_repeats_0130_in_november() -> None:
    t = utc(2026, 3, 7, 12)
    got = [local(NEW_YORK, x) for x in runs_between("30 2 * * *", NEW_YORK, t, t + 2 * 86400)]
    assert got == ["2026-03-08 03:00:00-04:00", "2026-03-09 02:30:00-04:00"]
    t = utc(2026, 10, 31, 12)
    got = [local(NEW_YORK, x) for x in runs_between("30 1 * * *", NEW_YORK, t, t + 2 * 86400)]
    assert got == ["2026-11-01 01:30:00-04:00", "2026-11-02 01:30:00-05:00"]
    # 02:30 exists once on fall-back day in New York (01:xx is the repeated hour).
    got = [local(NEW_YORK, x) for x in runs_between("30 2 * * *", NEW_YORK, t, t + 86400)]
    assert got == ["2026-11-01 02:30:00-05:00"]


@pytest.mark.parametrize(("zone", "day"), TRANSITIONS)
@pytest.mark.parametrize("expr", ["30 2 * * *", "30 1 * * *", "0 2 * * *", "59 2 * * *"])
def test_a_daily_job_runs_exactly_once_on_every_transition_day(
    zone: ZoneInfo, day: date, expr: str
) -> None:
    start, end = day_bounds(zone, day)
    got = runs_between(expr, zone, start - 2 * 86400, end + 2 * 86400)
    assert set(local_days(zone, got).values()) == {1}
    assert len(got) == 5


@pytest.mark.parametrize(("zone", "day"), TRANSITIONS)
def test_an_hourly_job_keeps_a_3600_second_rhythm_through_the_transition(
    zone: ZoneInfo, day: date
) -> None:
    start, end = day_bounds(zone, day)
    got = runs_between("30 * * * *", zone, start - 86400, end + 86400)
    assert {b - a for a, b in itertools.pairwise(got)} == {3600.0}
    hours = round((end - start) / 3600)  # 23 on spring-forward day, 25 on fall-back day
    assert hours in (23, 25)
    assert local_days(zone, got)[day] == hours


def test_an_interval_job_in_the_skipped_hour_has_no_runs_and_doubles_in_the_repeated_one() -> None:
    spring = runs_between("*/30 2 * * *", BERLIN, *day_bounds(BERLIN, date(2026, 3, 29)))
    assert spring == []
    autumn = runs_between("*/30 2 * * *", BERLIN, *day_bounds(BERLIN, date(2026, 10, 25)))
    assert [local(BERLIN, x) for x in autumn] == [
        "2026-10-25 02:00:00+02:00",
        "2026-10-25 02:30:00+02:00",
        "2026-10-25 02:00:00+01:00",
        "2026-10-25 02:30:00+01:00",
    ]


def test_several_skipped_times_of_a_fixed_job_run_once_at_the_end_of_the_gap() -> None:
    got = runs_between("0,15,30,45 2,3 * * *", BERLIN, *day_bounds(BERLIN, date(2026, 3, 29)))
    assert [local(BERLIN, x) for x in got] == [
        "2026-03-29 03:00:00+02:00",
        "2026-03-29 03:15:00+02:00",
        "2026-03-29 03:30:00+02:00",
        "2026-03-29 03:45:00+02:00",
    ]


def _reference(expr: str, zone: ZoneInfo, start: float, end: float) -> list[float]:
    """The rules written the slow way: walk every UTC minute and every local wall minute."""
    spec = cron.parse(expr)

    def matches(w: datetime) -> bool:
        return (
            w.minute in spec.minutes
            and w.hour in spec.hours
            and w.month in spec.months
            and spec.day_matches(w.year, w.month, w.day)
        )

    found: set[float] = set()
    minute = int(start // 60 * 60)
    while minute < end:
        w = datetime.fromtimestamp(minute, tz=zone)
        # A fixed-time job runs a repeated wall time only at its first occurrence.
        if matches(w.replace(tzinfo=None)) and (not spec.fixed_time or w.fold == 0):
            found.add(float(minute))
        minute += 60
    if spec.fixed_time:
        # Wall times that do not exist run once when their gap ends.
        wall = datetime.fromtimestamp(start, tz=zone).replace(tzinfo=None, second=0)
        last = datetime.fromtimestamp(end, tz=zone).replace(tzinfo=None)
        while wall < last:
            aware = wall.replace(tzinfo=zone)
            round_trip = datetime.fromtimestamp(aware.timestamp(), tz=zone).replace(tzinfo=None)
            if round_trip != wall and matches(wall):
                gap_end = int(wall.replace(tzinfo=zone, fold=1).timestamp())
                while datetime.fromtimestamp(gap_end, tz=zone).replace(tzinfo=None) <= wall:
                    gap_end += 1
                found.add(float(gap_end))
            wall += timedelta(minutes=1)
    return sorted(x for x in found if start < x < end)


@pytest.mark.parametrize(("zone", "day"), TRANSITIONS)
@pytest.mark.parametrize(
    "expr",
    ["30 2 * * *", "*/20 * * * *", "0 */2 * * *", "15 1-3 * * *", "* 2 * * *", "5 0 * * sun"],
)
def test_next_run_agrees_with_a_minute_by_minute_model(
    zone: ZoneInfo, day: date, expr: str
) -> None:
    start, end = day_bounds(zone, day)
    start -= 6 * 3600
    end += 6 * 3600
    assert runs_between(expr, zone, start, end) == _reference(expr, zone, start, end)


@pytest.mark.parametrize(("zone", "day"), TRANSITIONS)
def test_next_run_from_any_instant_near_a_transition_is_the_next_one(
    zone: ZoneInfo, day: date
) -> None:
    start, end = day_bounds(zone, day)
    for expr in ("30 2 * * *", "*/20 * * * *", "30 1 * * *"):
        spec = cron.parse(expr)
        expected = _reference(expr, zone, start - 86400, end + 86400)
        t = start
        while t < end:  # every 7 minutes and 13 seconds through the day
            following = next(x for x in expected if x > t)
            assert crontz.next_run(spec, zone, t) == following, (expr, local(zone, t))
            t += 433


# --- specs ------------------------------------------------------------------------------


def test_a_zone_is_the_sixth_word_of_a_cron_spec_and_part_of_its_canonical_form() -> None:
    spec = parse_spec("cron 30 2 * * *   Europe/Berlin")
    assert isinstance(spec, Cron)
    assert spec.canonical == "cron 30 2 * * * Europe/Berlin"
    assert spec.zone == BERLIN
    assert spec.first_run(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)  # 03:00 CEST
    # UTC written out is the same schedule as no zone (old encodings, old rows).
    assert parse_spec("cron 30 2 * * * UTC").canonical == "cron 30 2 * * *"
    assert parse_spec("cron 30 2 * * *").zone is None


@pytest.mark.parametrize(
    "spec",
    [
        "cron 0 3 * * * Mars/Olympus_Mons",
        "cron 0 3 * * * ../../../etc/passwd",
        "cron 0 3 * * * /usr/share/zoneinfo/UTC",
        "cron 0 3 * * * Europe",
        "cron 0 3 * * * Europe/Berlin extra",
        "cron 0 3 * * * " + "A" * 65,
    ],
)
def test_an_unknown_or_malformed_zone_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_spec(spec)
