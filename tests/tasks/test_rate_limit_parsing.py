"""Celery's rate limit strings and where a bad one is refused."""

from __future__ import annotations

import pytest

from brokerd_client.tasks import App
from brokerd_client.tasks.exceptions import ConfigurationError
from brokerd_client.tasks.ratelimit import parse_rate


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        ("10/s", 10.0),
        ("120/m", 2.0),
        ("3600/h", 1.0),
        ("0.5/s", 0.5),
        (" 6 / m ", 0.1),
        ("7", 7.0),
        (3, 3.0),
        (2.5, 2.5),
    ],
)
def test_celery_forms_mean_slots_per_second(text: object, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("none", [None, "", 0, "0/s", "0"])
def test_no_limit(none: object) -> None:
    assert parse_rate(none) is None


@pytest.mark.parametrize("bad", ["10/d", "ten/s", "/s", -1, "-5/m", True, [1], "1e9/s"])
def test_bad_limits_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        parse_rate(bad)


def test_a_bad_task_rate_limit_is_refused_at_the_decorator() -> None:
    app = App("rl")
    with pytest.raises(ValueError, match="rate_limit"):

        @app.task(rate_limit="5/week")
        def f() -> None: ...


def test_the_default_rate_limit_setting_is_checked_and_kept() -> None:
    app = App("rl")
    app.conf.task_default_rate_limit = "100/m"
    assert app.conf.task_default_rate_limit == "100/m"
    with pytest.raises(ConfigurationError, match="task_default_rate_limit"):
        app.conf.task_default_rate_limit = "lots"


def test_old_celery_names_of_the_rate_limit_settings_map() -> None:
    app = App("rl")

    class Old:
        CELERY_DEFAULT_RATE_LIMIT = "10/s"
        CELERY_DISABLE_RATE_LIMITS = True

    app.config_from_object(Old, namespace="CELERY")
    assert app.conf.task_default_rate_limit == "10/s"
    assert app.conf.worker_disable_rate_limits is True
