"""Crontab parsing and next-run computation (UTC), and the ``every`` spec."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from brokerd.tasks import cron
from brokerd.tasks.schedules import Cron, Every, parse_spec


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def nxt(expr: str, after: str) -> str:
    return iso(cron.parse(expr).next_after(ts(after)))


def runs(expr: str, after: str, n: int) -> list[str]:
    spec = cron.parse(expr)
    t = ts(after)
    out = []
    for _ in range(n):
        t = spec.next_after(t)
        out.append(iso(t))
    return out


# --- parsing -------------------------------------------------------------------------


def test_star_means_every_value() -> None:
    spec = cron.parse("* * * * *")
    assert spec.minutes == tuple(range(60))
    assert spec.hours == tuple(range(24))
    assert spec.days == tuple(range(1, 32))
    assert spec.months == tuple(range(1, 13))
    assert spec.weekdays == tuple(range(7))
    assert not spec.days_restricted and not spec.weekdays_restricted


def test_lists_ranges_and_steps_expand() -> None:
    spec = cron.parse("*/15 1,2,3 1-5 1-12/5 */2")
    assert spec.minutes == (0, 15, 30, 45)
    assert spec.hours == (1, 2, 3)
    assert spec.days == (1, 2, 3, 4, 5)
    assert spec.months == (1, 6, 11)
    assert spec.weekdays == (0, 2, 4, 6)
    assert cron.parse("1-30/5 * * * *").minutes == (1, 6, 11, 16, 21, 26)
    assert cron.parse("0,30,10-12 * * * *").minutes == (0, 10, 11, 12, 30)
    # "a/s" runs from a to the field's maximum.
    assert cron.parse("50/3 * * * *").minutes == (50, 53, 56, 59)


def test_month_and_weekday_names_are_understood() -> None:
    spec = cron.parse("0 0 * jan,Mar-MAY mon-fri")
    assert spec.months == (1, 3, 4, 5)
    assert spec.weekdays == (1, 2, 3, 4, 5)
    assert cron.parse("0 0 * * sun").weekdays == (0,)
    assert cron.parse("0 0 * * sat,sun").weekdays == (0, 6)


def test_seven_is_sunday_too() -> None:
    assert cron.parse("0 0 * * 7").weekdays == (0,)
    assert cron.parse("0 0 * * 0,7").weekdays == (0,)
    assert cron.parse("0 0 * * 5-7").weekdays == (0, 5, 6)


def test_whitespace_is_flexible() -> None:
    assert cron.parse("  0\t12  * *   1 ").expression == "0 12 * * 1"


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("", "5 fields"),
        ("* * * *", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day-of-month"),
        ("* * 32 * *", "day-of-month"),
        ("* * * 13 *", "month"),
        ("* * * 0 *", "month"),
        ("* * * * 8", "day-of-week"),
        ("5-1 * * * *", "backwards"),
        ("*/0 * * * *", "at least 1"),
        ("*/x * * * *", "step"),
        ("1,,2 * * * *", "empty"),
        ("a * * * *", "not a valid value"),
        ("* * * foo *", "not a valid value"),
        ("* * * * funday", "not a valid value"),
        ("-1 * * * *", "not a valid value"),
        ("1- * * * *", "not a valid value"),
        ("* * * jan-dec-feb *", "not a valid value"),
        ("0 0 30 feb *", "no day"),
        ("0 0 31 apr,jun,sep,nov *", "no day"),
        ("\u0661 * * * *", "not a valid value"),  # non-ASCII digit one
    ],
)
def test_invalid_expressions_raise_value_error(expr: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        cron.parse(expr)


def test_impossible_day_of_month_is_fine_with_a_weekday() -> None:
    # Day-of-week restricted too: OR rule, so Mondays in February still run.
    spec = cron.parse("0 0 30 feb mon")
    assert iso(spec.next_after(ts("2024-01-01 00:00"))) == "2024-02-05 00:00:00"


# --- next_after ----------------------------------------------------------------------


def test_next_after_is_strictly_after_and_on_whole_minutes() -> None:
    assert nxt("* * * * *", "2024-01-01 00:00:00") == "2024-01-01 00:01:00"
    assert nxt("* * * * *", "2024-01-01 00:00:59.9") == "2024-01-01 00:01:00"
    assert nxt("*/15 * * * *", "2024-01-01 00:14:30") == "2024-01-01 00:15:00"
    assert nxt("*/15 * * * *", "2024-01-01 00:15:00") == "2024-01-01 00:30:00"


def test_next_after_rolls_over_to_the_next_hour_and_day() -> None:
    assert nxt("30 9 * * *", "2024-05-10 09:31") == "2024-05-11 09:30:00"
    assert nxt("30 9,17 * * *", "2024-05-10 09:31") == "2024-05-10 17:30:00"
    assert nxt("0 * * * *", "2024-05-10 23:00") == "2024-05-11 00:00:00"
    assert nxt("5 10-12 * * *", "2024-05-10 12:06") == "2024-05-11 10:05:00"


def test_next_after_crosses_month_and_year_boundaries() -> None:
    assert nxt("0 0 1 * *", "2024-01-31 12:00") == "2024-02-01 00:00:00"
    assert nxt("59 23 31 12 *", "2024-12-31 23:59") == "2025-12-31 23:59:00"
    assert nxt("0 0 1 1 *", "2024-06-15 00:00") == "2025-01-01 00:00:00"
    assert nxt("* * * * *", "2024-12-31 23:59:30") == "2025-01-01 00:00:00"
    # The 31st only exists in some months.
    assert runs("0 0 31 * *", "2024-01-31 00:00", 3) == [
        "2024-03-31 00:00:00",
        "2024-05-31 00:00:00",
        "2024-07-31 00:00:00",
    ]


def test_a_leap_day_comes_only_in_leap_years() -> None:
    assert nxt("0 0 29 2 *", "2024-03-01 00:00") == "2028-02-29 00:00:00"
    assert nxt("0 12 29 feb *", "2100-01-01 00:00") == "2104-02-29 12:00:00"  # 2100: no leap
    assert nxt("0 0 * * *", "2024-02-28 00:00") == "2024-02-29 00:00:00"
    assert nxt("0 0 * * *", "2023-02-28 00:00") == "2023-03-01 00:00:00"


def test_weekday_fields_pick_the_right_days() -> None:
    # 2024-01-01 was a Monday.
    assert nxt("0 9 * * mon-fri", "2024-01-05 10:00") == "2024-01-08 09:00:00"  # Fri -> Mon
    assert nxt("0 9 * * 0", "2024-01-01 00:00") == "2024-01-07 09:00:00"
    assert nxt("0 9 * * 7", "2024-01-01 00:00") == "2024-01-07 09:00:00"
    assert nxt("0 0 * * sat", "2024-12-29 00:00") == "2025-01-04 00:00:00"


def test_with_both_day_fields_restricted_either_one_matches() -> None:
    # The 13th OR any Friday (Vixie cron), not "Friday the 13th".
    assert runs("0 0 13 * fri", "2024-09-01 00:00", 4) == [
        "2024-09-06 00:00:00",  # Friday
        "2024-09-13 00:00:00",  # the 13th (also a Friday)
        "2024-09-20 00:00:00",
        "2024-09-27 00:00:00",
    ]
    assert runs("0 0 1,15 * wed", "2024-05-01 00:00", 4) == [
        "2024-05-08 00:00:00",
        "2024-05-15 00:00:00",
        "2024-05-22 00:00:00",
        "2024-05-29 00:00:00",
    ]


def test_a_star_prefixed_day_field_means_and() -> None:
    # "*" in one day field: only the other one restricts.
    assert nxt("0 0 * * fri", "2024-09-01 00:00") == "2024-09-06 00:00:00"
    assert nxt("0 0 13 * *", "2024-09-01 00:00") == "2024-09-13 00:00:00"
    # "*/2" starts with "*" as in Vixie cron: odd days that are also Fridays.
    assert runs("0 0 */2 * fri", "2024-09-01 00:00", 2) == [
        "2024-09-13 00:00:00",
        "2024-09-27 00:00:00",
    ]


def test_many_consecutive_runs_are_increasing_and_matching() -> None:
    spec = cron.parse("*/7 */5 1-10,20 */2 mon,thu")
    t = ts("2023-11-30 23:59")
    for _ in range(500):
        n = spec.next_after(t)
        assert n > t
        d = datetime.fromtimestamp(n, tz=UTC)
        assert d.second == 0
        assert d.minute in spec.minutes and d.hour in spec.hours and d.month in spec.months
        assert spec.day_matches(d.year, d.month, d.day)
        # Nothing in between matches: the minute before n (after t) does not.
        before = d - timedelta(minutes=1)
        if before.timestamp() > t:
            assert not (
                before.minute in spec.minutes
                and before.hour in spec.hours
                and before.month in spec.months
                and spec.day_matches(before.year, before.month, before.day)
            )
        t = n


# --- specs -----------------------------------------------------------------------------


def test_every_specs_parse_to_their_canonical_form() -> None:
    every = parse_spec("every 1")
    assert isinstance(every, Every)
    assert every.seconds == 1.0
    assert every.canonical == "every 1"
    assert parse_spec("every 0.5").canonical == "every 0.5"
    assert parse_spec("  every   2.50 ").canonical == "every 2.5"
    assert parse_spec("every\t3").canonical == "every 3"
    assert parse_spec("cron\t0  3 * *\t*").canonical == "cron 0 3 * * *"
    assert every.first_run(100.0) == 101.0


def test_every_stays_on_its_grid_and_skips_missed_runs() -> None:
    every = parse_spec("every 1")
    # On time or a little late: the next slot of the grid, no drift.
    assert every.following(10.0, 10.02) == 11.0
    assert every.following(10.0, 10.99) == 11.0
    # Down for a while: fire once now, then the first slot after now.
    assert every.following(10.0, 15.5) == 16.0
    assert every.following(10.0, 16.0) == 17.0
    ten = parse_spec("every 10")
    assert ten.following(100.0, 1234.5) == 1240.0


def test_cron_specs_parse_and_collapse_missed_runs() -> None:
    spec = parse_spec("cron 0 3 * * *")
    assert isinstance(spec, Cron)
    assert spec.canonical == "cron 0 3 * * *"
    start = ts("2024-01-01 12:00")
    assert iso(spec.first_run(start)) == "2024-01-02 03:00:00"
    # Missed runs collapse into one: the next is after now, not after the old due time.
    assert iso(spec.following(ts("2024-01-02 03:00"), ts("2024-01-05 10:00"))) == (
        "2024-01-06 03:00:00"
    )


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "every",
        "every 0",
        "every 0.05",
        "every -1",
        "every nan",
        "every inf",
        "every 1e12",
        "every one",
        "cron",
        "cron * * * *",
        "cron 99 * * * *",
        "hourly",
        "Every 1",
    ],
)
def test_invalid_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_spec(spec)
