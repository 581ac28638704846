"""Where an app's broker URL comes from: the setting (``App(broker=)``,
``broker_url``, ``-b``), else ``$BROKERD_URL``, else ``$CELERY_BROKER_URL``,
else ``brokerd://localhost:5673``; an overridden environment URL is logged."""

from __future__ import annotations

import logging

import pytest

from brokerd_client.tasks import App, ConfigurationError
from brokerd_client.tasks.clients import DEFAULT_BROKER


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BROKERD_URL", raising=False)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)


def test_without_setting_or_environment_the_default_is_used() -> None:
    assert App("t").broker_url == DEFAULT_BROKER


def test_celery_broker_url_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "brokerd://celery-env:5673")
    assert App("t").broker_url == "brokerd://celery-env:5673"


def test_brokerd_url_wins_over_celery_broker_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "brokerd://celery-env:5673")
    monkeypatch.setenv("BROKERD_URL", "brokerd://brokerd-env:5673")
    assert App("t").broker_url == "brokerd://brokerd-env:5673"


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKERD_URL", "")
    monkeypatch.setenv("CELERY_BROKER_URL", "brokerd://celery-env:5673")
    assert App("t").broker_url == "brokerd://celery-env:5673"


def test_the_setting_wins_and_the_ignored_variable_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BROKERD_URL", "brokerd://secret-token@brokerd-env:5673")
    app = App("t", broker="brokerd://explicit:5673")
    with caplog.at_level(logging.WARNING, logger="brokerd_client.tasks"):
        assert app.broker_url == "brokerd://explicit:5673"
        assert app.broker_url == "brokerd://explicit:5673"
    told = [r.getMessage() for r in caplog.records]
    assert len(told) == 1
    assert "$BROKERD_URL" in told[0]
    assert "secret-token" not in told[0]


def test_the_same_url_in_setting_and_environment_is_not_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "brokerd://same:5673")
    app = App("t", broker="brokerd://same:5673")
    with caplog.at_level(logging.WARNING, logger="brokerd_client.tasks"):
        assert app.broker_url == "brokerd://same:5673"
    assert caplog.records == []


def test_an_invalid_environment_url_names_the_variable_not_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://:hunter2@cache:6379/0")
    with pytest.raises(ConfigurationError, match=r"\$CELERY_BROKER_URL") as info:
        _ = App("t").broker_url
    assert "hunter2" not in str(info.value)
