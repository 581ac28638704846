"""``--store`` / ``BROKERD_STORE``: which store a broker uses, checked at
start, and never shown with its password."""

from __future__ import annotations

import pytest

from brokerd.config import ConfigError, load
from brokerd.storage.postgres import StoreURLError, check_url, is_postgres_url, redact

SECRET = "s3cr3t-pw"
URL = f"postgresql://app:{SECRET}@db.internal:5432/brokerd"


def test_redact_replaces_the_password_and_keeps_the_rest() -> None:
    assert redact(URL) == "postgresql://app:***@db.internal:5432/brokerd"
    assert redact("postgresql://app@h/db") == "postgresql://app@h/db"


def test_postgres_urls_are_recognised_by_scheme() -> None:
    assert is_postgres_url("postgresql://u@h/db")
    assert is_postgres_url("postgres://u@h/db")
    assert not is_postgres_url("sqlite:///x")
    assert not is_postgres_url("./data")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://u@h/db", "not a postgresql:// URL"),
        ("postgresql://u@h:99999/db", "malformed"),
        ("postgresql://u@h:5432", "names no database"),
    ],
)
def test_an_unusable_url_is_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(StoreURLError, match=says):
        check_url(url)


def test_an_error_about_a_url_never_shows_its_password() -> None:
    with pytest.raises(StoreURLError) as info:
        check_url(f"postgresql://app:{SECRET}@h:5432")
    assert SECRET not in str(info.value)


def test_the_store_comes_from_the_flag_or_the_environment() -> None:
    assert load([], env={}).store is None
    assert load(["--store", "postgresql://u@h/db"], env={}).store == "postgresql://u@h/db"
    from_env = load([], env={"BROKERD_STORE": "postgresql://u@h/env"})
    assert from_env.store == "postgresql://u@h/env"
    both = load(["--store", "postgresql://u@h/flag"], env={"BROKERD_STORE": "postgresql://u@h/e"})
    assert both.store == "postgresql://u@h/flag"


def test_a_bad_store_url_stops_the_start_without_showing_the_password() -> None:
    with pytest.raises(ConfigError, match="names no database") as info:
        load(["--store", f"postgresql://app:{SECRET}@h:5432/"], env={})
    assert SECRET not in str(info.value)


def test_the_config_never_shows_the_store_password() -> None:
    config = load(["--store", URL], env={})
    assert SECRET not in repr(config)
    assert SECRET not in config.store_shown
    assert config.store_shown == redact(URL)


def test_a_postgresql_store_is_not_an_in_memory_broker() -> None:
    config = load(["--store", "postgresql://u@h/db"], env={})
    assert not config.in_memory
    with pytest.raises(ConfigError, match="memory"):
        load(["--store", "postgresql://u@h/db", "--data-dir", ":memory:"], env={})
