"""Beat entries become the broker's schedule specs (``every``/``cron``, UTC)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from brokerd_client.tasks import App, crontab
from brokerd_client.tasks.beat import schedule_message
from brokerd_client.tasks.schedules import parse_beat_schedule, schedule_spec


@pytest.mark.parametrize(
    ("schedule", "spec"),
    [
        (crontab(), "cron * * * * *"),
        (crontab(minute=0, hour=3), "cron 0 3 * * *"),
        (crontab(minute="*/15", hour="9-17", day_of_week="mon-fri"), "cron */15 9-17 * * mon-fri"),
        (
            crontab(minute=[30, 0], day_of_month="1,15", month_of_year="jan"),
            "cron 0,30 * 1,15 jan *",
        ),
        (timedelta(seconds=10), "every 10"),
        (timedelta(milliseconds=1500), "every 1.5"),
        (1, "every 1"),
        (0.25, "every 0.25"),
    ],
)
def test_schedules_become_their_canonical_specs(schedule: object, spec: str) -> None:
    assert schedule_spec(schedule) == spec


@pytest.mark.parametrize("bad", [0, -1, timedelta(0), 0.05, "10", None])
def test_bad_intervals_are_refused(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        schedule_spec(bad)


@pytest.mark.parametrize("field", ["1 2", "*;rm", "", "5 */2"])
def test_bad_crontab_fields_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match="minute"):
        crontab(minute=field)


def test_entries_are_validated_with_their_name() -> None:
    with pytest.raises(ValueError, match="entry 'x': 'task'"):
        parse_beat_schedule({"x": {"schedule": 1}})
    with pytest.raises(ValueError, match="entry 'x': unsupported options"):
        parse_beat_schedule({"x": {"task": "t", "schedule": 1, "options": {"link": 1}}})
    with pytest.raises(TypeError, match="entry 'x': schedule must be"):
        parse_beat_schedule({"x": {"task": "t", "schedule": "hourly"}})


def test_schedule_message_routes_and_encodes_like_a_task_call() -> None:
    app = App(
        "t",
        task_routes={"proj.web.*": "web"},
        beat_schedule={
            "push": {
                "task": "proj.web.push",
                "schedule": 5,
                "args": (1, 2),
                "options": {"expires": 30, "priority": 4},
            }
        },
    )
    msg = schedule_message(app, app.conf.beat_schedule["push"])
    assert (msg["exchange"], msg["routing_key"], msg["spec"]) == ("", "web", "every 5")
    assert msg["body"] == b'{"args":[1,2],"kwargs":{}}'
    assert msg["headers"] == {
        "task": "proj.web.push",
        "retries": 0,
        "content-type": "application/json",
        "expires_in": 30.0,
    }
    assert "id" not in msg["headers"]  # each firing gets its own id from the broker
    assert msg["priority"] == 4


def test_a_crontab_runs_in_the_apps_timezone_and_an_interval_has_none() -> None:
    from zoneinfo import ZoneInfo

    beat = {
        "nightly": {"task": "t", "schedule": crontab(minute=30, hour=2)},
        "tick": {"task": "t", "schedule": 10},
    }
    app = App("t", beat_schedule=beat)
    assert schedule_message(app, app.conf.beat_schedule["nightly"])["spec"] == "cron 30 2 * * *"
    # Set after beat_schedule (or before: the zone is read when the entry is registered).
    app.conf.timezone = "Europe/Berlin"
    nightly = app.conf.beat_schedule["nightly"]
    assert schedule_message(app, nightly)["spec"] == "cron 30 2 * * * Europe/Berlin"
    assert schedule_message(app, app.conf.beat_schedule["tick"])["spec"] == "every 10"
    app.conf.timezone = ZoneInfo("America/New_York")
    assert app.conf.timezone == "America/New_York"
    app.conf.timezone = "Etc/UTC"
    assert schedule_message(app, nightly)["spec"] == "cron 30 2 * * *"


def test_old_celery_timezone_name_reaches_the_schedules() -> None:
    app = App("t")
    app.config_from_object(
        {
            "CELERY_TIMEZONE": "Europe/Berlin",
            "CELERYBEAT_SCHEDULE": {"n": {"task": "t", "schedule": crontab(hour=3, minute=0)}},
        }
    )
    assert schedule_message(app, app.conf.beat_schedule["n"])["spec"] == (
        "cron 0 3 * * * Europe/Berlin"
    )
