"""The rule table and one session's access decisions (brokerd/auth), without a socket."""

from __future__ import annotations

import pytest

import brokerd_protocol as bp
from brokerd.auth import passwords
from brokerd.auth.access import MAX_CACHED, Access
from brokerd.auth.rules import RULES
from brokerd.auth.users import Permission, check_pattern, check_tags
from brokerd.cli import build_server
from brokerd.config import Config
from brokerd.errors import BrokerError
from brokerd_protocol import ErrorCode


def test_every_client_frame_the_full_broker_handles_has_a_rule() -> None:
    server = build_server(Config(port=0, data_dir=":memory:", metrics_port=0).validate())
    client_frames = set(server.handlers) | {bp.Publish}
    missing = sorted(cls.__name__ for cls in client_frames - RULES.keys())
    assert missing == []


def test_a_frame_without_a_rule_is_refused() -> None:
    access = Access("app", "/", frozenset(), Permission(".*", ".*", ".*"))
    with pytest.raises(BrokerError) as info:
        access.check(bp.Welcome(1, "x", 1.0, 1024))  # no client frame: no rule
    assert info.value.code is ErrorCode.ACCESS_REFUSED
    assert "no access rule" in info.value.message


def test_refusal_names_user_vhost_resource_and_permission() -> None:
    access = Access("app", "/", frozenset(), Permission("^app\\.", "^app\\.", "^app\\."))
    with pytest.raises(BrokerError) as info:
        access.check(bp.Bind(1, "other.q", "app.ex", "k"))
    assert info.value.code is ErrorCode.ACCESS_REFUSED
    assert info.value.message == (
        "access to queue 'other.q' in vhost '/' refused for user 'app': write permission needed"
    )


def test_the_default_exchange_is_named_amq_default() -> None:
    access = Access("app", "/", frozenset(), Permission("", "^amq\\.default$", ""))
    access.check_publish("")
    with pytest.raises(BrokerError, match="exchange 'other'"):
        access.check_publish("other")


def test_an_empty_pattern_allows_nothing_and_patterns_search_unanchored() -> None:
    access = Access("u", "/", frozenset(), Permission("", "jobs", "^jobs$"))
    assert not access.allowed("configure", "")
    assert not access.allowed("configure", "anything")
    assert access.allowed("write", "my-jobs-queue")  # a search, as RabbitMQ's
    assert not access.allowed("read", "my-jobs-queue")
    assert access.allowed("read", "jobs")


def test_the_decision_cache_is_bounded() -> None:
    access = Access("u", "/", frozenset(), Permission(".*", ".*", ".*"))
    for i in range(MAX_CACHED * 2 + 5):
        assert access.allowed("read", f"q{i}")
    assert len(access._cache["read"]) <= MAX_CACHED


def test_admin_frames_need_their_tags() -> None:
    everything = Permission(".*", ".*", ".*")
    plain = Access("u", "/", frozenset(), everything)
    monitor = Access("m", "/", frozenset({"monitoring"}), everything)
    admin = Access("a", "/", frozenset({"administrator"}), everything)
    for access in (plain, monitor):
        with pytest.raises(BrokerError, match="needs the tag administrator"):
            access.check(bp.AddUser(1, "x", "pw"))
    with pytest.raises(BrokerError, match="administrator or monitoring"):
        plain.check(bp.ListQueues(1))
    monitor.check(bp.ListQueues(1))
    admin.check(bp.AddUser(1, "x", "pw"))
    assert not plain.admin and monitor.admin and admin.admin


def test_tags_and_patterns_are_validated() -> None:
    assert check_tags(["administrator", " monitoring ", ""]) == {"administrator", "monitoring"}
    with pytest.raises(ValueError, match="unknown tag"):
        check_tags(["root"])
    with pytest.raises(ValueError, match="not a regular expression"):
        check_pattern("read", "(")


def test_a_password_hash_keeps_its_parameters_and_verifies() -> None:
    stored = passwords.hash_password("s3cret", n=2**10)
    assert stored.startswith("scrypt$1024$8$1$")
    assert "s3cret" not in stored
    assert passwords.verify("s3cret", stored)
    assert not passwords.verify("s3cret!", stored)
    assert passwords.needs_rehash(stored)  # weaker than today's parameters
    assert not passwords.verify("s3cret", "scrypt$3$8$1$AAAA$AAAA")  # n not a power of two
    assert not passwords.verify("s3cret", "plain text")
    a, b = passwords.hash_password("same", n=2**10), passwords.hash_password("same", n=2**10)
    assert a != b  # a random salt each time
